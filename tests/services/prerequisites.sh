#!/usr/bin/env bash
# What `make test` needs beyond Python 3.11 and PostgreSQL's server binaries:
#   sshd (openssh-server)  the tunnel and SFTP suites run against OpenSSH too
#   npm                    installs s3rver, a third S3 server for the storage suites
# Installed here when this runs as root on a Debian-like machine (as `make demo` does its
# own); otherwise those suites are skipped with the reason printed (on CI they fail instead).
set -u
have() { command -v "$1" >/dev/null 2>&1 || [ -x "/usr/sbin/$1" ]; }
missing=()
have sshd || missing+=(openssh-server)
have npm || missing+=(npm)
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" = 0 ] && have apt-get; then
  echo "make test: installing ${missing[*]} (apt-get)"
  (apt-get install -y -qq "${missing[@]}" >/dev/null 2>&1 \
    || (apt-get update -qq >/dev/null 2>&1 && apt-get install -y -qq "${missing[@]}" >/dev/null 2>&1)) \
    || echo "make test: could not install ${missing[*]}; the suites that need them are skipped"
else
  echo "make test: ${missing[*]} not installed (and not root to install it): the suites that need them are skipped"
fi
exit 0
