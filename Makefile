# Shim for the legacy make targets: each forwards to `cargo xtask`, which holds
# all the logic. Variables given to make (ARCH=aarch64, TAG_SCHEME=gvisor, ...)
# reach it as environment variables.

CARGO ?= cargo
XTASK := $(CARGO) xtask

export IMAGES_DIR IMAGES_CONFIG IMAGES_ENGINE ARCH REMOTE_IMAGE_PREFIX LOCAL_IMAGE_PREFIX \
	TAG_SCHEME NON_TEST_IMAGES DOCKER_BUILD_ARGS SKIP_IMAGE_LOAD DOCKER_PUSH_AS_LATEST

ALL_TARGETS := list-all-images list-all-test-images load-all-images load-all-test-images \
	build-all-images push-all-images push-all-test-images test-all-test-images register-cross

.PHONY: help $(ALL_TARGETS)
help:
	@echo 'Targets (each runs `cargo xtask <command>`; see `cargo xtask --help`):'
	@echo '  list-all-images         list-all-test-images'
	@echo '  load-all-images         load-all-test-images    build-all-images'
	@echo '  push-all-images         push-all-test-images    test-all-test-images'
	@echo '  register-cross'
	@echo '  local-image-<image>     print the local name and tag'
	@echo '  load-<image or group>   local, else pull, else build; then tag'
	@echo '  pull-<image>            pull the remote tag'
	@echo '  rebuild-<image>         build (also build-<image>)'
	@echo '  tag-<image>             tag the remote-named image with its local names'
	@echo '  test-<image>            build only if the registry lacks the tag'
	@echo '  push-<image or group>   build and push what the registry lacks'
	@echo '  push-manifest-<image>   publish a multi-arch index over the pushed per-arch images'
	@echo 'Variables: ARCH IMAGES_DIR REMOTE_IMAGE_PREFIX LOCAL_IMAGE_PREFIX TAG_SCHEME NON_TEST_IMAGES'
	@echo '           DOCKER_BUILD_ARGS SKIP_IMAGE_LOAD DOCKER_PUSH_AS_LATEST IMAGES_ENGINE'

$(ALL_TARGETS):
	@$(XTASK) $@

local-image-%:
	@$(XTASK) local-image $*
load-%:
	@$(XTASK) load $*
pull-%:
	@$(XTASK) pull $*
rebuild-%:
	@$(XTASK) rebuild $*
build-%:
	@$(XTASK) build $*
tag-%:
	@$(XTASK) tag $*
test-%:
	@$(XTASK) test $*
push-manifest-%:
	@$(XTASK) push-manifest $*
push-%:
	@$(XTASK) push $*
