#!/bin/sh
# Install (or upgrade) mailrelay on a Debian host, from this checkout. Idempotent: run it again
# after `git pull` to upgrade the program; the configuration and the data are never touched twice.
#
#   sudo deploy/install.sh [--root DIR] [--python PYTHON] [-- INIT_OPTIONS...]
#
# Needs Python >= 3.11 with venv (Debian 12: apt-get install python3-venv); PYTHON defaults to
# /usr/bin/python3.
#
# What it does (paths relative to DIR, default /):
#   /opt/mailrelay/                  a venv with this checkout pip-installed into it (not editable)
#   /usr/local/bin/mailrelay         -> /opt/mailrelay/bin/mailrelay
#   mailrelay system user and group  from deploy/mailrelay.sysusers.conf (systemd-sysusers), else useradd
#   /var/lib/mailrelay/              the data directory (spool, SQLite database, TLS files, keys): 0750 mailrelay
#   /etc/mailrelay/mailrelay.toml    the configuration, written once by `mailrelay init --home /var/lib/mailrelay
#                                    INIT_OPTIONS...` and moved here (0640 root:mailrelay: it holds the admin
#                                    token); /var/lib/mailrelay/mailrelay.toml is a symlink to it, so every
#                                    command keeps taking `--home /var/lib/mailrelay`
#   /etc/systemd/system/mailrelay.service, /opt/mailrelay/share/doc/mailrelay/ (README, example config)
# It does not start the service: review the configuration, then `systemctl enable --now mailrelay`.
#
# --root DIR installs into DIR as if it were / (for tests and images), without creating the user,
# without chown and without systemctl; the venv is then made at DIR/opt/mailrelay and runs from there.
set -eu

ROOT=${DESTDIR:-}
PYTHON=/usr/bin/python3  # Debian's: the service user must be able to run it (not a pyenv under /root)
while [ $# -gt 0 ]; do
    case $1 in
        --root) [ $# -ge 2 ] || { echo "install.sh: --root needs a directory" >&2; exit 2; }
                ROOT=$2; shift 2 ;;
        --root=*) ROOT=${1#--root=}; shift ;;
        --python) [ $# -ge 2 ] || { echo "install.sh: --python needs an interpreter" >&2; exit 2; }
                  PYTHON=$2; shift 2 ;;
        --) shift; break ;;
        -h|--help) sed -n '2,25p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "install.sh: unknown option $1 (options for \`mailrelay init\` go after --)" >&2; exit 2 ;;
    esac
done
ROOT=${ROOT%/}
if [ -n "$ROOT" ]; then
    mkdir -p "$ROOT"
    ROOT=$(cd "$ROOT" && pwd)
fi

SRC=$(cd "$(dirname "$0")/.." && pwd)
[ -f "$SRC/pyproject.toml" ] && [ -f "$SRC/deploy/mailrelay.service" ] || {
    echo "install.sh: run it from a mailrelay checkout (no pyproject.toml in $SRC)" >&2; exit 1; }
if [ -z "$ROOT" ] && [ "$(id -u)" -ne 0 ]; then
    echo "install.sh: run as root (or give --root DIR to install into a directory)" >&2; exit 1
fi

PREFIX=$ROOT/opt/mailrelay
DATA=$ROOT/var/lib/mailrelay
ETC=$ROOT/etc/mailrelay
say() { echo "install.sh: $*"; }
# As the service user on a real install, so everything init creates belongs to it.
as_mailrelay() { if [ -z "$ROOT" ]; then runuser -u mailrelay -- "$@"; else "$@"; fi; }

# 1. the user
if [ -z "$ROOT" ] && ! getent passwd mailrelay >/dev/null; then
    if command -v systemd-sysusers >/dev/null; then
        say "creating the mailrelay user (systemd-sysusers)"
        systemd-sysusers "$SRC/deploy/mailrelay.sysusers.conf"
    else
        say "creating the mailrelay user (useradd)"
        useradd --system --user-group --home-dir /var/lib/mailrelay --no-create-home \
            --shell /usr/sbin/nologin --comment "mailrelay sending engine" mailrelay
    fi
fi

# 2. the program
if [ ! -x "$PREFIX/bin/python" ]; then
    say "creating the venv $PREFIX"
    "$PYTHON" -m venv "$PREFIX" || {
        echo "install.sh: cannot create a venv with $PYTHON (Debian: apt-get install python3-venv)" >&2; exit 1; }
fi
if [ -z "$ROOT" ] && ! runuser -u mailrelay -- "$PREFIX/bin/python" -c '' 2>/dev/null; then
    echo "install.sh: the mailrelay user cannot run $PREFIX/bin/python (made from $(readlink -f "$PREFIX/bin/python"));" \
         "remove $PREFIX and run again with --python /usr/bin/python3" >&2
    exit 1
fi
say "installing mailrelay from $SRC into $PREFIX"
# Built from a clean copy: setuptools reuses a build/ directory in the source tree, and a module
# deleted since an earlier build would be installed again from it.
BUILD=$(mktemp -d)
trap 'rm -rf "$BUILD"' EXIT
tar -C "$SRC" --exclude=./.git --exclude=./.venv --exclude=./var --exclude=./build --exclude='*.egg-info' \
    --exclude=__pycache__ -cf - . | tar -C "$BUILD" -xf -
"$PREFIX/bin/python" -m pip install --quiet --disable-pip-version-check "$BUILD"
install -d -m 0755 "$ROOT/usr/local/bin" "$PREFIX/share/doc/mailrelay"
ln -sfn /opt/mailrelay/bin/mailrelay "$ROOT/usr/local/bin/mailrelay"
install -m 0644 "$SRC/README.md" "$SRC/deploy/mailrelay.toml.example" "$PREFIX/share/doc/mailrelay/"

# 3. the data directory and the configuration
install -d -m 0750 "$DATA"
install -d -m 0750 "$ETC"
if [ -z "$ROOT" ]; then
    chown mailrelay:mailrelay "$DATA"
    chown root:mailrelay "$ETC"
fi
LINK_TARGET=../../../etc/mailrelay/mailrelay.toml  # relative: right under / and under --root alike
if [ ! -e "$ETC/mailrelay.toml" ]; then
    if [ ! -f "$DATA/mailrelay.toml" ] || [ -L "$DATA/mailrelay.toml" ]; then
        rm -f "$DATA/mailrelay.toml"  # a dangling link from a removed /etc/mailrelay
        say "mailrelay init --home /var/lib/mailrelay${*:+ $*}"
        as_mailrelay "$PREFIX/bin/mailrelay" init --home "$DATA" "$@"
    else
        say "adopting the existing $DATA/mailrelay.toml"
    fi
    install -m 0640 "$DATA/mailrelay.toml" "$ETC/mailrelay.toml"
    rm -f "$DATA/mailrelay.toml"
    [ -n "$ROOT" ] || chown root:mailrelay "$ETC/mailrelay.toml"
elif [ $# -gt 0 ]; then
    say "$ETC/mailrelay.toml exists: the init options are ignored (edit the file instead)"
fi
if [ ! -L "$DATA/mailrelay.toml" ]; then
    if [ -e "$DATA/mailrelay.toml" ]; then
        echo "install.sh: $DATA/mailrelay.toml is a file, but the configuration is $ETC/mailrelay.toml;" \
             "merge them and remove $DATA/mailrelay.toml, then run install.sh again" >&2
        exit 1
    fi
    ln -s "$LINK_TARGET" "$DATA/mailrelay.toml"
fi

# 4. the service
install -d -m 0755 "$ROOT/etc/systemd/system"
install -m 0644 "$SRC/deploy/mailrelay.service" "$ROOT/etc/systemd/system/mailrelay.service"
if [ -z "$ROOT" ] && [ -d /run/systemd/system ]; then
    systemctl daemon-reload
fi

say "done. Configuration: /etc/mailrelay/mailrelay.toml; data: /var/lib/mailrelay"
say "start: systemctl enable --now mailrelay   (after an upgrade: systemctl restart mailrelay)"
