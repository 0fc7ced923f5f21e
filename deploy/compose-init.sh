#!/bin/sh
# The one-shot `init` service of docker-compose.yml: makes the secrets every other service
# mounts, at first start, into Docker volumes; none is in the repository or the image. It runs
# as root only to hand each fresh volume to the image's user (uid 10001), and exits.
#
#   $OUT/kafka/     server.properties, tls/ca.pem, tls/broker.pem     (the broker's, nothing else)
#   $OUT/<role>/    ca.pem, <role>.pem, <role>.key                     (one role's pair per volume)
#   $OUT/master/    master.key       the master keyring, `v1:<base64>` (created once, then kept)
#   $OUT/postgres/  password, pgpass the key store's password (created once) and libpq's passfile
#
# Certificates come from `shredline kafka compose` in this service's own data dir (a volume):
# a CA whose key is never written, a broker certificate valid for `kafka` and `localhost`, one
# client certificate per role. Re-runs keep everything that exists and is current.
set -eu
umask 077
out=${SHREDLINE_COMPOSE_OUT:-/run/shredline/out}
data=${SHREDLINE_DATA_DIR:?SHREDLINE_DATA_DIR is not set}
kafka=$data/kafka

shredline kafka compose >/dev/null
mkdir -p "$out/kafka/tls"
cp "$kafka/compose/server.properties" "$out/kafka/server.properties"
cp "$kafka/tls/ca.pem" "$kafka/tls/broker.pem" "$out/kafka/tls/"
copied=""
for key in "$kafka"/credentials/*.key; do
  role=$(basename "$key" .key)
  [ -d "$out/$role" ] || continue  # only the roles this deployment mounts a volume for
  cp "$kafka/tls/ca.pem" "$kafka/credentials/$role.pem" "$key" "$out/$role/"
  copied="$copied $role"
done
echo "init: role certificates:${copied:- none}"

mkdir -p "$out/master" "$out/postgres"
python3 - "$out/master/master.key" <<'PY'
import sys
from pathlib import Path

from shredline.keystore.master import load_keyring

load_keyring(None, Path(sys.argv[1]), create=True)  # created 0600 if missing, else checked
PY
if [ ! -s "$out/postgres/password" ]; then
  python3 -c 'import secrets; print(secrets.token_urlsafe(32))' >"$out/postgres/password"
fi
printf '*:*:*:*:%s\n' "$(cat "$out/postgres/password")" >"$out/postgres/pgpass"

if [ "$(id -u)" = 0 ]; then
  owner=${SHREDLINE_COMPOSE_OWNER:-10001:10001}
  chown -R "$owner" "$out"
fi
chmod -R go= "$out"
echo "init: secrets ready in $out"
