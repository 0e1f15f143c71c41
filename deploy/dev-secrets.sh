#!/bin/sh
# Generates the secrets docker-compose.yml mounts (compose `secrets:`), once, into deploy/secrets/.
# Development and evaluation only: production takes its secrets from the cluster (deploy/k8s).
# Run again: files that exist are kept (delete one to make it anew); `--force` remakes everything.
#
# Needs openssl. The directory is 0700 (no other account on this host reads it); the files are
# 0644 because compose bind-mounts them as they are and the containers run as uid 65532.
set -eu

here=$(cd "$(dirname "$0")" && pwd)
out="$here/secrets"
force=no
[ "${1:-}" = "--force" ] && force=yes
command -v openssl >/dev/null || { echo "dev-secrets.sh: openssl is required" >&2; exit 1; }

mkdir -p "$out"
chmod 0700 "$out"
cd "$out"
umask 022

need() { [ "$force" = yes ] || [ ! -s "$1" ]; }
# 32 random bytes as letters and digits only (safe inside URLs and config files).
token() { openssl rand -base64 48 | tr -dc 'A-Za-z0-9' | cut -c1-40; }
put() { printf '%s' "$2" > "$1"; }

# Internal CA and the mTLS certificate of each process (SAN = its compose host name, which is
# also the name GRPC_ALLOWED_CLIENTS checks).
if need ca.crt || need ca.key; then
  openssl req -x509 -new -nodes -newkey ec -pkeyopt ec_paramgen_curve:P-256 -keyout ca.key -out ca.crt \
    -days 825 -subj "/CN=platform internal CA (compose)" \
    -addext "basicConstraints=critical,CA:TRUE,pathlen:0" -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null
  force_leaves=yes
else
  force_leaves=no
fi
issue() { # name, file stem, SANs
  name=$1 stem=$2 sans=$3
  if [ "$force_leaves" = yes ] || need "$stem.crt" || need "$stem.key"; then
    openssl req -new -nodes -newkey ec -pkeyopt ec_paramgen_curve:P-256 -keyout "$stem.key" -out "$stem.csr" \
      -subj "/CN=$name" 2>/dev/null
    printf 'subjectAltName=%s\nextendedKeyUsage=serverAuth,clientAuth\nkeyUsage=critical,digitalSignature\nbasicConstraints=CA:FALSE\n' "$sans" > "$stem.ext"
    openssl x509 -req -in "$stem.csr" -CA ca.crt -CAkey ca.key -CAcreateserial -days 397 -sha256 \
      -extfile "$stem.ext" -out "$stem.crt" 2>/dev/null
    rm -f "$stem.csr" "$stem.ext"
  fi
}
for p in gateway auth-service reports-service analytics-service; do
  issue "$p" "$p" "DNS:$p"
done
# The gateway's public certificate (HTTPS on :8443), from the same CA:
#   curl --cacert deploy/secrets/ca.crt https://localhost:8443/ready
issue localhost tls "DNS:localhost,IP:127.0.0.1,IP:::1"

# auth-service: token signing key (Ed25519 PKCS#8), master key, salts.
need jwt_signing_keys.pem && openssl genpkey -algorithm ed25519 -out jwt_signing_keys.pem
need encryption_key && put encryption_key "$(openssl rand -base64 32)"
# The envelope keyring (ENCRYPTION_KEYS): id:base64 of 32 bytes.
need encryption_keys && put encryption_keys "k1:$(openssl rand -base64 32)"
need device_id_salt && put device_id_salt "$(token)"
need refresh_token_secret && put refresh_token_secret "$(token)"

# PostgreSQL: the superuser, then per service an owner role (migrations) and a runtime role.
need postgres_password && put postgres_password "$(token)"
for s in auth reports analytics; do
  need "${s}_owner_password" && put "${s}_owner_password" "$(token)"
  need "${s}_runtime_password" && put "${s}_runtime_password" "$(token)"
  put "${s}_database_url" "postgres://${s}:$(cat "${s}_runtime_password")@postgres:5432/platform?sslmode=disable"
  put "${s}_migration_url" "postgres://${s}_owner:$(cat "${s}_owner_password")@postgres:5432/platform?sslmode=disable"
done

need redis_password && put redis_password "$(token)"
put redis_url "redis://:$(cat redis_password)@redis:6379/0"

need grafana_admin_password && put grafana_admin_password "$(token)"

chmod 0644 ./*
# The CA key signs certificates only here; no container mounts it.
chmod 0600 ca.key
echo "dev-secrets.sh: secrets in $out (Grafana: user admin, password in grafana_admin_password)"
