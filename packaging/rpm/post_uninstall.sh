# envsnap post-uninstall: forget the removed unit; keep /etc/envsnap and
# /var/lib/envsnap (catalog, local backups) and the group, as the .deb does.
if command -v systemctl >/dev/null; then
    systemctl daemon-reload >/dev/null 2>&1 || :
fi
