# envsnap pre-uninstall: on removal (not upgrade, $1 = 0) stop and disable the daemon.
if [ "$1" = 0 ] && command -v systemctl >/dev/null; then
    systemctl disable --now envsnapd.service >/dev/null 2>&1 || :
fi
