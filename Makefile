# One entry point for what is not `cargo`: the distribution packages.
# Tests and lints: the README's test command, and .ci/run.
.PHONY: packages
packages:
	packaging/build-packages.sh
