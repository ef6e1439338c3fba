# Podman (ENGINE=podman make <target>; docs/podman.md): what the Makefile's engine table needs, found here.
ifeq ($(ENGINE),podman)
PODMAN_COMPOSE_MIN := 1.3
PODMAN_COMPOSE_VERSION := $(shell podman-compose --version 2>/dev/null | sed -n 's/^podman-compose version //p')
# podman-compose >= 1.3 when installed (older ones ignore `depends_on: service_healthy`), else docker compose on
# Podman's API socket
PODMAN_COMPOSE = $(if $(PODMAN_COMPOSE_VERSION),podman-compose,docker compose)
PODMAN_SOCKET ?= $(or $(XDG_RUNTIME_DIR),/tmp/podman-run-$(shell id -u))/podman/podman.sock
# rootless only: keep-id maps your uid into train and the notebook, so that what they write is yours (rootful, the
# container's uids are the host's already)
rootless_files = $(addprefix -f ,$(wildcard compose.podman.yaml compose.podman.dev.yaml))
PODMAN_COMPOSE_FILES := -f compose.yaml$(if $(filter-out 0,$(shell id -u)), $(rootless_files))
# what answers once service $(1) is up: the server's /ready, Jupyter's /api (no token needed)
ready_url = http://127.0.0.1:$(ready_$(1))
ready_serve = $(SERVE_PORT)/ready
ready_notebook = $(NOTEBOOK_PORT)/api
ready_serve-dev = $(DEV_PORT)/ready

# the compose provider, checked before a target that needs it runs (one line: what is wrong, what to do)
oldest = $(firstword $(shell printf '%s\n' $(1) | sort -V))
install_it := install podman-compose >= $(PODMAN_COMPOSE_MIN) (pipx install podman-compose)
start_socket := `systemctl --user start podman.socket` (no systemd: `podman system service --time=0 &`)
ifneq ($(filter train serve down logs lint notebook dev mlflow promote,$(or $(MAKECMDGOALS),help)),)
ifneq ($(PODMAN_COMPOSE_VERSION),)
ifneq ($(call oldest,$(PODMAN_COMPOSE_MIN) $(PODMAN_COMPOSE_VERSION)),$(PODMAN_COMPOSE_MIN))
$(error podman-compose $(PODMAN_COMPOSE_VERSION) ignores depends_on: service_healthy: $(install_it), \
  or remove it to use docker compose on Podman's socket)
endif
else ifeq ($(wildcard $(PODMAN_SOCKET)),)
$(error ENGINE=podman needs podman-compose or Podman's API socket for docker compose, and $(PODMAN_SOCKET) is \
  missing: $(install_it), or start the socket with $(start_socket))
else
export DOCKER_HOST := unix://$(PODMAN_SOCKET)
endif
endif

# release pushes buildx's provenance and SBOM attestations, Docker's only
ifneq ($(filter release,$(MAKECMDGOALS)),)
$(error make release needs docker buildx (provenance and SBOM attestations, which Podman cannot attach): \
  run it with ENGINE=docker)
endif
endif
