#!/usr/bin/env bash
# Copy what each run reports (config, metrics, history) from the git-ignored runs/ into results/:
# bash results/collect.sh SRC DEST   (SRC a run directory, or a folder of them: runs/cv_probe results/supervised/cv_probe)
set -euo pipefail
src=$1 dest=$2
find "$src" -name metrics.json | while read -r m; do
    run=$(dirname "$m"); out="$dest"; [ "$run" != "${src%/}" ] && out="$dest/${run#"$src"/}"
    mkdir -p "$out"
    for f in config.json metrics.json history.json; do [ -f "$run/$f" ] && cp "$run/$f" "$out/"; done
done
