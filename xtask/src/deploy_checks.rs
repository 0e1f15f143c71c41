//! The operators' files under deploy/ and docker-compose.yml, checked with the real tools
//! (promtool, kubectl kustomize, kubernetes-validate, checkov, docker-compose config), installed by
//! xtask itself.
