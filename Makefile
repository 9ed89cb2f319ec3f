# Build and install remedy.
#
#   make                                   build the release binary (and the man page generator)
#                                          (then `sudo make install` only installs: nothing is rebuilt as root)
#   make install [PREFIX=/usr/local] [DESTDIR=]
#   make uninstall [PREFIX=/usr/local] [DESTDIR=]
#
# What goes where (under $(DESTDIR)$(PREFIX)):
#   bin/remedy                                   the program
#   share/remedy/Policies/*.yaml                 built-in policies   } found from bin/remedy's own place
#   share/remedy/Payloads/NAME/...               payload manifests   } (see ResourceLocator)
#   share/man/man1/remedy.1, remedy.SUB.1        man pages (swift-argument-parser's generate-manual)
#   share/bash-completion/completions/remedy     } shell completions
#   share/zsh/site-functions/_remedy             } (remedy --generate-completion-script)
#   share/fish/vendor_completions.d/remedy.fish  }
#   share/doc/remedy/LICENSE
#
# BIN=PATH on the command line installs that binary instead of building one (the man page generator is then
# taken from beside it, or from GENERATE_MANUAL=PATH): the install test installs the debug build this way.

PREFIX  ?= /usr/local
DESTDIR ?=
SWIFT   ?= swift
# The Swift runtime and Foundation are linked into the binary: an installed remedy needs no Swift toolchain.
SWIFT_BUILD_FLAGS ?= --static-swift-stdlib

bindir     = $(PREFIX)/bin
datadir    = $(PREFIX)/share
mandir     = $(datadir)/man
bashcompdir = $(datadir)/bash-completion/completions
zshcompdir  = $(datadir)/zsh/site-functions
fishcompdir = $(datadir)/fish/vendor_completions.d

RELEASE_BIN := .build/release/remedy
RELEASE_GENERATE_MANUAL := .build/release/generate-manual
ifneq ($(origin BIN),command line)
BIN := $(RELEASE_BIN)
INSTALL_NEEDS := build
endif
GENERATE_MANUAL ?= $(dir $(BIN))generate-manual

INSTALL ?= install
D = $(DESTDIR)

.PHONY: all build install uninstall

all: build

# File targets: after `make`, a `sudo make install` finds the binary up to date and runs no swift build as root.
build: $(RELEASE_BIN) $(RELEASE_GENERATE_MANUAL)

$(RELEASE_BIN): Package.swift $(shell find Sources -type f)
	$(SWIFT) build -c release $(SWIFT_BUILD_FLAGS) --product remedy
	@touch "$@"

$(RELEASE_GENERATE_MANUAL): Package.swift
	$(SWIFT) build -c release $(SWIFT_BUILD_FLAGS) --product generate-manual
	@touch "$@"

# Payloads: each payload's folder (manifest and templates); Payloads/README.md is for readers of the source.
install: $(INSTALL_NEEDS)
	@test -x "$(BIN)" || { echo "make: no remedy binary at $(BIN)" >&2; exit 1; }
	@test -x "$(GENERATE_MANUAL)" || { echo "make: no generate-manual at $(GENERATE_MANUAL) (swift build --product generate-manual)" >&2; exit 1; }
	$(INSTALL) -d "$(D)$(bindir)" "$(D)$(datadir)/remedy/Policies" "$(D)$(datadir)/remedy/Payloads" \
		"$(D)$(mandir)/man1" "$(D)$(bashcompdir)" "$(D)$(zshcompdir)" "$(D)$(fishcompdir)" "$(D)$(datadir)/doc/remedy"
	$(INSTALL) -m 0755 "$(BIN)" "$(D)$(bindir)/remedy"
	$(INSTALL) -m 0644 Policies/*.yaml "$(D)$(datadir)/remedy/Policies/"
	cd Payloads && find . -mindepth 2 -type f | sort | while read -r f; do \
		$(INSTALL) -D -m 0644 "$$f" "$(D)$(datadir)/remedy/Payloads/$$f" || exit 1; done
	"$(BIN)" --generate-completion-script bash > "$(D)$(bashcompdir)/remedy"
	"$(BIN)" --generate-completion-script zsh > "$(D)$(zshcompdir)/_remedy"
	"$(BIN)" --generate-completion-script fish > "$(D)$(fishcompdir)/remedy.fish"
	set -e; man=$$(mktemp -d); trap 'rm -rf "$$man"' EXIT; \
		"$(GENERATE_MANUAL)" "$(BIN)" --multi-page --section 1 --output-directory "$$man"; \
		test -f "$$man/remedy.1"; \
		$(INSTALL) -m 0644 "$$man"/*.1 "$(D)$(mandir)/man1/"
	$(INSTALL) -m 0644 LICENSE "$(D)$(datadir)/doc/remedy/LICENSE"

# Removes what install wrote (by name: a policy of your own in share/remedy/Policies stays, and so do its folders).
uninstall:
	rm -f "$(D)$(bindir)/remedy" "$(D)$(bashcompdir)/remedy" "$(D)$(zshcompdir)/_remedy" "$(D)$(fishcompdir)/remedy.fish" \
		"$(D)$(mandir)/man1/remedy.1" "$(D)$(mandir)/man1"/remedy.*.1 "$(D)$(datadir)/doc/remedy/LICENSE"
	cd Policies && for f in *.yaml; do rm -f "$(D)$(datadir)/remedy/Policies/$$f"; done
	cd Payloads && find . -mindepth 2 -type f | while read -r f; do rm -f "$(D)$(datadir)/remedy/Payloads/$$f"; done
	-find "$(D)$(datadir)/remedy" "$(D)$(datadir)/doc/remedy" -depth -type d -empty -delete 2>/dev/null
