# agentd %post (RPM; $1 = 1 on install, 2 on upgrade): users and groups,
# state directory, enable the service. It never starts agentd: check the
# kernel first (agentd doctor), then `systemctl start agentd`.
systemd-sysusers agentd.conf || exit 1
systemd-tmpfiles --create agentd.conf || exit 1
if [ -d /run/systemd/system ]; then
    systemctl daemon-reload || :
fi
if [ "$1" -eq 1 ]; then
    systemctl enable agentd.service \
        || echo "agentd: could not enable agentd.service; run: systemctl enable agentd" >&2
    echo "agentd: installed and enabled, not started. Check this kernel with 'agentd doctor', then: systemctl start agentd"
fi
exit 0
