# Podman (ENGINE=podman make <target>; docs/podman.md). What differs from Docker, and why:
# - builds run `podman build --format docker`: an OCI image, Buildah's default, would drop the HEALTHCHECK;
# - compose is podman-compose >= 1.3 when installed (older ones ignore `depends_on: service_healthy`), otherwise
#   docker compose talking to Podman's API socket; rootless, compose.podman.yaml maps your uid into the containers
#   (userns keep-id) so that train and the notebook write files you own;
# - make waits for /ready itself: Podman runs health checks from systemd timers, which never fire on a machine
#   without systemd (containers, WSL, CI), so "healthy" would never come.
ifeq ($(ENGINE),podman)
PODMAN_COMPOSE_MIN := 1.3
PODMAN_COMPOSE_VERSION := $(shell podman-compose --version 2>/dev/null | sed -n 's/^podman-compose version //p')
# only where podman-compose is not installed: docker compose on this API socket
PODMAN_SOCKET ?= $(or $(XDG_RUNTIME_DIR),/tmp/podman-run-$(shell id -u))/podman/podman.sock
# keep-id exists for rootless Podman only (rootful, the container's uids are the host's already)
COMPOSE_FILES := -f compose.yaml $(if $(filter-out 0,$(shell id -u)),$(addprefix -f ,$(wildcard compose.podman.yaml compose.podman.dev.yaml)))
COMPOSE = $(if $(PODMAN_COMPOSE_VERSION),podman-compose,docker compose) $(COMPOSE_FILES)
BUILD_FLAGS = --format docker --build-arg VERSION=$(VERSION) --build-arg REVISION=$(REVISION) \
  --build-arg CREATED=$(CREATED) --build-arg SOURCE=$(SOURCE) --secret id=pipconf,src=$(PIP_CONF) \
  $(if $(PLATFORM),--platform $(PLATFORM))
# the image compose.yaml names for target $(1) (serve: the plain tag; train, dev: a suffix)
image_of = $(IMAGE):$(TAG)$(if $(filter-out serve,$(1)),-$(1))
build_image = podman build $(BUILD_FLAGS) --target $(1) -t $(call image_of,$(1)) .
# what answers once service $(1) is up: the server's /ready, Jupyter's /api (no token needed)
ready_url = http://127.0.0.1:$(if $(filter serve,$(1)),$(SERVE_PORT)/ready,$(if $(filter notebook,$(1)),$(NOTEBOOK_PORT)/api,$(DEV_PORT)/ready))

define up_or_say_why
$(call build_image,$(if $(filter serve,$(1)),serve,dev))
$(COMPOSE)$(if $(2), $(2)) up -d --no-build $(1) && python3 scripts/wait_ready.py $(call ready_url,$(1)) $(WAIT_TIMEOUT) || { status=$$?; \
  $(COMPOSE)$(if $(2), $(2)) logs --tail 20 $(1) >&2; \
  echo "make $@: $(1) exited or did not answer $(call ready_url,$(1)) within $(WAIT_TIMEOUT) s; its last log lines are above: fix what they say, then run make $@ again" >&2; \
  exit $$status; }
endef

# the compose provider, checked before a target that needs it runs (one line: what is wrong, what to do)
ifneq ($(filter train serve down logs lint notebook dev,$(or $(MAKECMDGOALS),help)),)
ifneq ($(PODMAN_COMPOSE_VERSION),)
ifneq ($(firstword $(shell printf '%s\n' $(PODMAN_COMPOSE_MIN) $(PODMAN_COMPOSE_VERSION) | sort -V)),$(PODMAN_COMPOSE_MIN))
$(error podman-compose $(PODMAN_COMPOSE_VERSION) ignores depends_on: service_healthy: install podman-compose >= $(PODMAN_COMPOSE_MIN) (pipx install podman-compose), or remove it to use docker compose on Podman's socket)
endif
else ifeq ($(wildcard $(PODMAN_SOCKET)),)
$(error ENGINE=podman needs podman-compose >= $(PODMAN_COMPOSE_MIN) (pipx install podman-compose) or Podman's API socket for docker compose, and $(PODMAN_SOCKET) is missing: start it with `systemctl --user start podman.socket` (no systemd: `podman system service --time=0 &`))
else
export DOCKER_HOST := unix://$(PODMAN_SOCKET)
endif
endif

# the CI image targets (make/checks.mk); release pushes buildx's provenance and SBOM attestations, Docker's only
BUILDX = podman build --format docker$(if $(PLATFORM), --platform $(PLATFORM))
ifneq ($(filter release,$(MAKECMDGOALS)),)
$(error make release needs docker buildx (provenance and SBOM attestations, which Podman cannot attach): run it with ENGINE=docker)
endif
endif
