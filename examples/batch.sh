#!/usr/bin/env bash
# Render every shot folder with a plain shell loop: one `toonctl interpolate` per shot.
#
#   examples/batch.sh SHOTS OUT [extra toonctl options...]
#
# Each subfolder of SHOTS holds key frames (*.png, in the shell's sort order: 10.png before 2.png) and
# optionally prompt.txt. Finished shots are skipped (--skip-existing), so the loop can simply be run again
# after a crash; outputs are written atomically, so an existing file is a complete one. A failing shot is
# reported and the loop goes on; the script exits 1 if any shot failed.
# What this loop does NOT do, and `toonctl batch SHOTS -o OUT` does (in one process, loading the model
# once): read each shot's shot.yaml and sketches/, take every image type (.jpg, .webp, ...), and order key
# frames naturally (2.png before 10.png). It is an example of scripting toonctl, not a replacement.
set -u
shots=${1:?usage: batch.sh SHOTS OUT [toonctl options...]}
out=${2:?usage: batch.sh SHOTS OUT [toonctl options...]}
shift 2
toonctl=${TOONCTL:-toonctl}
mkdir -p "$out"
failed=0
for shot in "$shots"/*/; do
    name=$(basename "$shot")
    prompt=""
    [ -f "$shot/prompt.txt" ] && prompt=$(cat "$shot/prompt.txt")
    if ! $toonctl interpolate "$shot"*.png -o "$out/$name.mp4" --prompt "$prompt" --skip-existing -q "$@"; then
        echo "shot $name failed" >&2
        failed=1
    fi
done
exit $failed
