#!/bin/sh
# Set up .venv (scripts/setup.sh) and run the main job, `vsfast demo`. Extra arguments go to it.
set -eu
cd "$(dirname "$0")/.."
scripts/setup.sh
exec .venv/bin/vsfast demo "$@"
