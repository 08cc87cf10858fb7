# The legacy image targets and Make API, each forwarded to `cargo xtask`, which
# holds all the logic. This file is the workspace's top-level Makefile and,
# copied to tools/images.mk, a drop-in for the legacy file that a project's root
# Makefile includes. Nothing runs while make reads it: the variables and
# functions below call the tool only when they are expanded, and the targets
# when they run. `make images-help` describes them.
#
# Variables given to make (ARCH=aarch64, TAG_SCHEME=gvisor, ...) reach the tool
# as environment variables. Names used only inside this file begin with _xtask_.

##
## Image targets: each runs `cargo xtask <command>`; `make images-help` lists
## them with the variables and functions this file gives a Makefile.
##

# Read before anything else is included: this file's name, and whether make
# was started on it (rather than on a Makefile that includes it).
_xtask_self := $(lastword $(MAKEFILE_LIST))
_xtask_toplevel := $(if $(filter-out $(firstword $(MAKEFILE_LIST)),$(_xtask_self)),,yes)
_xtask_goal := $(.DEFAULT_GOAL)

_xtask_empty :=
_xtask_space := $(_xtask_empty) $(_xtask_empty)
_xtask_comma := ,

# The workspace holding the xtask crate: the nearest directory at or above this
# file's that has xtask/Cargo.toml. Cargo finds `cargo xtask` (an alias of the
# workspace's .cargo/config.toml) from the current directory, so when make runs
# outside the workspace (`make -f`, or a Makefile elsewhere including this one)
# the alias is spelled out with the workspace's manifest; the tool still runs
# in make's directory, where relative paths given to it were meant.
_xtask_up = $(if $(wildcard $(1)/xtask/Cargo.toml),$(1),$(if $(filter-out /,$(1)),$(call _xtask_up,$(patsubst %/,%,$(dir $(1))))))
_xtask_ws := $(call _xtask_up,$(realpath $(dir $(_xtask_self))))

# A word quoted for the shell.
_xtask_q = '$(subst ','\'',$(1))'

CARGO ?= cargo
_xtask_spelled = $(CARGO) run --quiet --manifest-path $(call _xtask_q,$(_xtask_ws)/Cargo.toml) --package xtask --
ifeq ($(if $(_xtask_ws),$(filter $(_xtask_ws) $(_xtask_ws)/%,$(CURDIR)),none),)
_xtask_cmd = $(_xtask_spelled)
else
_xtask_cmd = $(CARGO) xtask
endif
# The Make API's value calls ($(call tag,...), the lists) stay silent even
# while the tool compiles: the spelled-out form, without the alias's progress
# bar. Targets run through the alias and show it.
_xtask_value_cmd = $(if $(_xtask_ws),$(_xtask_spelled),$(_xtask_cmd))

# ---- variables ------------------------------------------------------------------

# Settings the tool reads from the environment, passed on as make has them: with
# the two prefixes below, the variables of VARIABLES in xtask/src/config.rs (a
# test holds the two lists equal).
_xtask_vars := IMAGES_DIR IMAGES_CONFIG IMAGES_ENGINE ARCH TAG_SCHEME NON_TEST_IMAGES DOCKER_BUILD_ARGS \
	SKIP_IMAGE_LOAD DOCKER_PUSH_AS_LATEST

# ARCH: the architecture images are for; `uname -m` unless given.
ifeq ($(strip $(ARCH)),)
ifeq ($(origin ARCH),command line)
override ARCH := $(shell uname -m)
else
ARCH := $(shell uname -m)
endif
endif
export $(_xtask_vars)

# REMOTE_IMAGE_PREFIX and LOCAL_IMAGE_PREFIX: as given (on the command line, in
# the environment, or by a Makefile before it includes this one), else the
# tool's own settings (xtask/images.toml), asked for once, when first expanded.
# Only given values are exported: exporting the others would ask the tool in
# every recipe.
define _xtask_prefix
ifeq ($$(strip $$($(1))),)
ifeq ($$(origin $(1)),command line)
override $(1) = $$(call _xtask_setting,$(1))
else
$(1) = $$(call _xtask_setting,$(1))
endif
unexport $(1)
else
export $(1)
endif
endef
$(eval $(call _xtask_prefix,REMOTE_IMAGE_PREFIX))
$(eval $(call _xtask_prefix,LOCAL_IMAGE_PREFIX))

# Every image name, and every test image name: one tool call per expansion.
ALL_IMAGES = $(call _xtask_call,list-all-images)
TEST_IMAGES = $(call _xtask_call,list-all-test-images)

# ---- functions: $(call <function>,<image>), the image named with _ or / ------------

# The image's directory: <images root>/<path>, the root as configured (relative
# to make's directory when under it: images/runtimes/go1.22).
path = $(_xtask_images_dir)/$(subst _,/,$(1))
# The Dockerfile chosen for ARCH: Dockerfile.$(ARCH) or Dockerfile.
dockerfile = $(call _xtask_call,local-image --print dockerfile $(call _xtask_arg,$(1)))
# The image's tag under the configured scheme: one tool call per expansion.
tag = $(call _xtask_call,local-image --print tag $(call _xtask_arg,$(1)))
# <REMOTE_IMAGE_PREFIX>/<path>_<ARCH> and <LOCAL_IMAGE_PREFIX>/<path>.
remote_image = $(REMOTE_IMAGE_PREFIX)/$(subst _,/,$(1))_$(_xtask_arch)
local_image = $(LOCAL_IMAGE_PREFIX)/$(subst _,/,$(1))

# ARCH as the tool spells it in names (amd64 and arm64 are also accepted).
_xtask_arch = $(patsubst amd64,x86_64,$(patsubst arm64,aarch64,$(strip $(ARCH))))
_xtask_images_dir = $(patsubst %/,%,$(if $(strip $(IMAGES_DIR)),$(strip $(IMAGES_DIR)),$(call _xtask_setting,IMAGES_DIR)))

# One setting of the tool, asked for on first use only.
_xtask_setting = $(if $(filter undefined,$(origin _xtask_set_$(1))),$(eval _xtask_set_$(1) := $$(call _xtask_call,settings $(1))))$(_xtask_set_$(1))

# The tool's output, its lines joined by spaces; make stops if it fails. Make
# (before 4.4) does not pass its exported variables to $(shell), so the
# settings make has are given on the command line.
_xtask_call = $(shell $(_xtask_shell_env)$(_xtask_value_cmd) $(1))$(if $(filter-out 0,$(.SHELLSTATUS)),$(error `cargo xtask $(1)` failed))
_xtask_shell_env = $(foreach v,$(_xtask_vars),$(if $(filter-out undefined environment,$(origin $(v))),$(v)=$(call _xtask_q,$($(v))) ))

# An image argument quoted for the shell only when it holds more than the
# characters of image names. One that starts with `-` would reach the tool as
# an option ($(call tag,-rf)): make stops instead.
_xtask_plain := a b c d e f g h i j k l m n o p q r s t u v w x y z 0 1 2 3 4 5 6 7 8 9 . _ - /
_xtask_strip = $(if $(2),$(call _xtask_strip,$(subst $(firstword $(2)),,$(1)),$(wordlist 2,$(words $(2)),$(2))),$(1))
_xtask_arg = $(if $(call _xtask_dash,$(1)),$(error image name `$(1)` starts with `-`: image names never do))$(if \
	$(or $(call _xtask_strip,$(1),$(_xtask_plain)),$(findstring $(_xtask_space),$(1))),$(call _xtask_q,$(1)),$(1))
_xtask_dash = $(filter -%,$(firstword $(1)))

# ---- make's own flags ---------------------------------------------------------

# The words of $(MAKEFLAGS) before `--`, after which come variables given on
# the command line (whose values may look like flags).
_xtask_mflags = $(subst ^, ,$(firstword $(subst ^--^, ,$(subst $(_xtask_space),^,^ $(MAKEFLAGS)))))
# make -k or -i: finish the other images when one fails.
_xtask_letters = $(filter-out -%,$(firstword $(_xtask_mflags)))
_xtask_keep_going = $(if $(findstring k,$(_xtask_letters))$(findstring i,$(_xtask_letters)),--keep-going)
# make -jN: N images at once (plain -j leaves the tool's default, the number of cores).
_xtask_jobs = $(patsubst -j%,--jobs %,$(filter-out -j,$(filter -j%,$(_xtask_mflags))))

# ---- targets ------------------------------------------------------------------

_xtask_lists := list-all-images list-all-test-images
_xtask_alls := load-all-images load-all-test-images build-all-images push-all-images push-all-test-images \
	test-all-test-images
_xtask_verbs := local-image push-manifest load pull rebuild build tag test push
_xtask_engine := $(_xtask_alls) load pull rebuild build tag test push

# The command line for a target: the command, the image (if any), the flags
# make's own flags mean for it, then XTASK_FLAGS as given. A target whose image
# starts with `-` (`make load--rf`) fails without running the tool, which would
# take the name for an option.
_xtask_forward = $(if $(call _xtask_dash,$(2)),$(call _xtask_dash_error,$(2)),$(strip $(_xtask_cmd) $(1) $(if \
	$(2),$(call _xtask_arg,$(2))) $(call _xtask_make_flags,$(1)))$(if $(strip $(XTASK_FLAGS)), $(XTASK_FLAGS)))
_xtask_dash_error = echo $(call _xtask_q,error: `make $@` names `$(1)`$(_xtask_comma) which is no image: image names \
	never start with `-` (make images-help lists the targets)) >&2; exit 2
_xtask_make_flags = $(if $(filter $(1),$(_xtask_engine)),$(_xtask_keep_going)) $(if \
	$(filter $(1),$(_xtask_alls)),$(_xtask_jobs))

.PHONY: images-help register-cross $(_xtask_lists) $(_xtask_alls) $(addsuffix -,$(_xtask_verbs))
# Pattern targets cannot be phony; reached through another pattern rule
# (`%-tests: load-%`) they would be taken for intermediate files to delete.
.PRECIOUS: $(addsuffix -%,$(_xtask_verbs))

images-help: ## Describes the image targets, make flags, variables and functions.
	@: $(info $(value _xtask_help))

$(_xtask_lists) $(_xtask_alls) register-cross:
	@$(call _xtask_forward,$@)

local-image-%:
	@$(call _xtask_forward,local-image,$*)
load-%: ## Uses the local image, else pulls its tag, else builds it; load-<group> loads a group.
	@$(call _xtask_forward,load,$*)
pull-%:
	@$(call _xtask_forward,pull,$*)
rebuild-%:
	@$(call _xtask_forward,rebuild,$*)
build-%:
	@$(call _xtask_forward,build,$*)
tag-%:
	@$(call _xtask_forward,tag,$*)
test-%:
	@$(call _xtask_forward,test,$*)
push-manifest-%:
	@$(call _xtask_forward,push-manifest,$*)
push-%: ## Builds and pushes what the registry lacks.
	@$(call _xtask_forward,push,$*)

# A target with no image (`make load-`) would otherwise match make's built-in
# rules and reach the tool as a stray name (`load-.o`).
$(addsuffix -,$(_xtask_verbs)):
	@echo 'error: `make $@` names no image: use $@<image or group>, e.g. $@basic_hello (make images-help lists the targets)' >&2; exit 2

# Pattern rules do not match names with `/` (make matches them against the part
# after the last `/`), so goals such as load-web/app or load-web/app/ get rules
# of their own, made from the command line's goals without running anything.
_xtask_verb_of = $(firstword $(foreach v,$(_xtask_verbs),$(if $(filter $(v)-%,$(1)),$(v))))
define _xtask_slash_goal
.PHONY: $(1)
$(1):
	@$$(call _xtask_forward,$(2),$(3))
endef
$(foreach g,$(MAKECMDGOALS),$(if $(and $(findstring /,$(g)),$(call _xtask_verb_of,$(g)),$(if \
	$(call _xtask_strip,$(g),$(_xtask_plain)),,yes)),$(eval $(call _xtask_slash_goal,$(g),$(call \
	_xtask_verb_of,$(g)),$(patsubst %/,%,$(patsubst $(call _xtask_verb_of,$(g))-%,%,$(g)))))))

ifeq ($(_xtask_toplevel),yes)
.PHONY: help
help: images-help
.DEFAULT_GOAL := help
else
# Included: the including Makefile keeps its own default goal.
.DEFAULT_GOAL := $(_xtask_goal)
endif

define _xtask_help
Image targets (each runs `cargo xtask <command>`; `cargo xtask --help` says more):
  list-all-images           list-all-test-images
  load-all-images           load-all-test-images      build-all-images
  push-all-images           push-all-test-images      test-all-test-images
  register-cross            make foreign-architecture binaries runnable (qemu)
  local-image-<image>       print its local name and tag
  load-<image or group>     use the local image, else pull its tag, else build it
  pull-<image>              pull the remote tag
  rebuild-<image>           build it (also build-<image>)
  tag-<image>               give the image pulled under its remote name its local names
  test-<image>              build it if the registry lacks its tag
  push-<image or group>     build and push what the registry lacks
  push-manifest-<image>     publish a multi-arch index over the pushed per-arch images
  <image> is a name (basic_hello) or a path (basic/hello).

Make's flags:
  -k, -i                    --keep-going: when an image fails, finish the others
  -jN                       --jobs N for the *-all-* targets
  XTASK_FLAGS='...'         any other flags, e.g. XTASK_FLAGS='--shard 2/4 --dry-run'

Variables (on the command line or in the environment; unset ones come from
xtask/images.toml): ARCH IMAGES_DIR IMAGES_CONFIG REMOTE_IMAGE_PREFIX
LOCAL_IMAGE_PREFIX TAG_SCHEME NON_TEST_IMAGES DOCKER_BUILD_ARGS SKIP_IMAGE_LOAD
DOCKER_PUSH_AS_LATEST IMAGES_ENGINE XTASK_FLAGS

For a Makefile that includes this one (nothing runs until expanded):
  $(ARCH)                        the architecture, `uname -m` unless given
  $(REMOTE_IMAGE_PREFIX)         the cache registry's prefix
  $(LOCAL_IMAGE_PREFIX)          the local names' prefix
  $(ALL_IMAGES), $(TEST_IMAGES)  every image name, every test image name
  $(call path,<image>)           its directory, e.g. images/basic/hello
  $(call dockerfile,<image>)     its Dockerfile for ARCH
  $(call tag,<image>)            its tag (one tool call)
  $(call remote_image,<image>)   <REMOTE_IMAGE_PREFIX>/<path>_<ARCH>
  $(call local_image,<image>)    <LOCAL_IMAGE_PREFIX>/<path>
endef
