# envsnap post-install: the socket group, the config and state directories, and a
# starting config. Never overwrites what the admin has. ($1: 1 install, 2 upgrade)
getent group envsnap >/dev/null || groupadd --system envsnap
# Restore drills run their scratch database servers as this user (no shell, no home).
getent passwd envsnap-drill >/dev/null || useradd --system --user-group --no-create-home \
    --home-dir /nonexistent --shell /sbin/nologin envsnap-drill
[ -d /etc/envsnap ] || install -d -m 0750 -o root -g root /etc/envsnap
[ -d /var/lib/envsnap ] || install -d -m 0700 -o root -g root /var/lib/envsnap
example=/usr/share/doc/envsnap/config.example.toml
if [ ! -e /etc/envsnap/envsnap.toml ] && [ -f "$example" ]; then
    install -m 0600 -o root -g root "$example" /etc/envsnap/envsnap.toml
fi
if command -v systemctl >/dev/null; then
    systemctl daemon-reload >/dev/null 2>&1 || :
    # Enabled, not started: the config is to be edited first (as the .deb does).
    [ "$1" = 1 ] && systemctl enable envsnapd.service >/dev/null 2>&1 || :
fi
