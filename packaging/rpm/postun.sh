# agentd %postun (RPM; $1 = 0 on erase, 1 on upgrade). On erase, unpin
# agentd's BPF objects so the kernel frees its programs. RPM has no purge:
# the state directory /var/lib/agentd (policy store, audit log, keys) is
# kept; delete it by hand if you mean to. Users and groups are kept.
if [ "$1" -eq 0 ]; then
    rm -rf /sys/fs/bpf/agentd /run/agentd /run/agentd-instances/agentd
    rmdir /run/agentd-instances 2>/dev/null || :
    # The package owns its files, not their directories: drop them if empty.
    rmdir /usr/share/agentd/policies /usr/share/agentd /usr/share/doc/agentd \
        /etc/agentd 2>/dev/null || :
fi
if [ -d /run/systemd/system ]; then
    systemctl daemon-reload || :
fi
exit 0
