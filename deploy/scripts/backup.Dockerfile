# syntax=docker/dockerfile:1.7
# The image of the backup CronJob (deploy/k8s/base/backup-cronjob.yaml): pg_dump/pg_restore of
# PostgreSQL 17 (dumps servers up to 17), age, and deploy/scripts/{backup,restore}.sh with the
# lib.sh they source.
#   docker build -f deploy/scripts/backup.Dockerfile -t platform/backup:0.1.0 .
FROM postgres:17-bookworm
RUN apt-get update \
 && apt-get install -y --no-install-recommends age \
 && rm -rf /var/lib/apt/lists/*
COPY --chmod=0555 deploy/scripts/backup.sh deploy/scripts/restore.sh deploy/scripts/lib.sh /usr/local/bin/
# No server runs here: the image's entrypoint would start one.
ENTRYPOINT []
USER 65532:65532
HEALTHCHECK NONE
CMD ["/usr/local/bin/backup.sh"]
