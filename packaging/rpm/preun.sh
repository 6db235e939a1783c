# agentd %preun (RPM; $1 = 0 on erase, 1 on upgrade): on erase, stop every
# agent, then agentd, and disable it. An upgrade leaves both running.
if [ "$1" -eq 0 ]; then
    if [ -d /run/systemd/system ]; then
        systemctl stop agentd.slice agentd.service || :
        # Agents started with `agentctl run` outside units live in raw
        # cgroups agentd.slice/NAME that agentd made: end them too.
        for slice in /sys/fs/cgroup/agentd.slice /sys/fs/cgroup/unified/agentd.slice; do
            for kill in "$slice"/*/cgroup.kill; do
                if [ -e "$kill" ]; then echo 1 > "$kill" || :; fi
            done
        done
    fi
    systemctl disable agentd.service || :
fi
exit 0
