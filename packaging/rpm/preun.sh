# agentd %preun (RPM; $1 = 0 on erase, 1 on upgrade): on erase, stop every
# agent, then agentd, and disable it. An upgrade leaves both running.
if [ "$1" -eq 0 ]; then
    if [ -d /run/systemd/system ]; then
        systemctl stop agent.slice agentd.service || :
    fi
    systemctl disable agentd.service || :
fi
exit 0
