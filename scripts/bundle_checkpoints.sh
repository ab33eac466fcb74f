#!/usr/bin/env bash
# Recipe for the checkpoints bundled in avs_depth_core/checkpoints/ (used by `make demo` and by the depth node by default).
# Everything comes from the project's own commands: simulate a scale-ambiguous bv2_mix world (halls, corridors, rooms),
# train AVS-Net RGB-Echoes (the pseudo-metric depth Mp) and AVS-Net Only-RGB (the default relative / zero-shot model R)
# on it, then copy the best checkpoints into the package. About 35 minutes per model on 2 shared CPU cores (24 epochs).
# The Only-RGB checkpoint in the package is still the earlier one (bv2 halls, 12 epochs): the last retrain (issue 16)
# put it into WORK_DIR/avsnet_rgb beforehand so only RGB-Echoes was trained. Usage: scripts/bundle_checkpoints.sh [WORK_DIR]
# The echo recipe of benchmarks/echo_scale_ablation.py is in config/avsnet_bundled.yaml: range-profile (time-of-flight)
# tokens (model.echo_range_profile, 256 bins over 30 m) and geometry-keeping augmentation (train.aug_flip 0.5, ears
# swapped; train.aug_scale 1.5, depth and echo delays scaled together). Per step it costs what the paper's branch costs
# (measured on this bag, 40 steps with one torch thread: 38 s with the recipe, 40 s without, cores shared).
# Optional, not bundled: BUNDLE_MONODEPTH2=1 also trains the self-supervised Monodepth2 relative model (at this CPU budget
# it is still poor on the simulator: median-scaled Abs Rel about 0.4 on bv1 and about 1 on bv2).
set -euo pipefail
cd "$(dirname "$0")/.."
WORK=${1:-out/bundle}
AVS=".venv/bin/avs-depth"
export OMP_NUM_THREADS=1
mkdir -p "$WORK"
kinds="avsnet avsnet_rgb"

# 1. data: 1200 scenes x 1 frame at the sim camera's 256x512, each scene scaled by a random factor in [0.5, 2]. One frame
# per scene: many scenes, each at its own scale, teach the scale better per CPU minute than a few scenes seen from many
# poses (benchmarks/echo_scale_ablation.py; the earlier bundle's 120 x 12 put +20 to +30 % on make demo's hall).
# The world is bv2_mix: BV2's halls and its smaller corridors, classrooms and offices, half each (sim/presets.py). On
# halls alone the nearest scene medians were about 3 m and the real BV2 sample (a room, median 1.03 m) came out at x1.8.
[ -d "$WORK/bv2mix_amb_1x" ] || $AVS simulate --preset bv2_mix --scale-ambiguous --sequences 1200 --frames 1 --seed 101 \
  --out "$WORK/bv2mix_amb_1x"

# 2. AVS-Net RGB-Echoes and Only-RGB, same data and budget (config/avsnet_bundled.yaml)
[ -f "$WORK/avsnet/checkpoints/best.safetensors" ] || \
  $AVS train --bag "$WORK/bv2mix_amb_1x" --config config/avsnet_bundled.yaml --out "$WORK/avsnet" --device cpu --num-workers 0
[ -f "$WORK/avsnet_rgb/checkpoints/best.safetensors" ] || \
  $AVS train --bag "$WORK/bv2mix_amb_1x" --config config/avsnet_bundled.yaml --no-echo --out "$WORK/avsnet_rgb" \
  --device cpu --num-workers 0

# 3. optional: self-supervised Monodepth2 on frame triples (60 sequences x 20 frames at 2 Hz, as benchmarks/scaling_ablation.py)
if [ "${BUNDLE_MONODEPTH2:-0}" = 1 ]; then
  kinds="$kinds monodepth2"
  [ -d "$WORK/bv2_seq" ] || $AVS simulate --preset bv2 --sequences 60 --frames 20 --rate 2 --height 128 --width 256 \
    --splits 0.9 0.0 0.1 --seed 202 --out "$WORK/bv2_seq"
  [ -f "$WORK/monodepth2/checkpoints/last.safetensors" ] || \
    $AVS train --model monodepth2 --bag "$WORK/bv2_seq" --config config/monodepth2_bundled.yaml --out "$WORK/monodepth2" \
    --device cpu --num-workers 0
  ln -sfn last.safetensors "$WORK/monodepth2/checkpoints/best.safetensors"
  ln -sfn last.json "$WORK/monodepth2/checkpoints/best.json"
fi

# 4. into the package
for kind in $kinds; do
  mkdir -p "avs_depth_core/checkpoints/$kind"
  cp "$WORK/$kind/checkpoints/best.safetensors" "avs_depth_core/checkpoints/$kind/default.safetensors"
  cp "$WORK/$kind/checkpoints/best.json" "avs_depth_core/checkpoints/$kind/default.json"
done
du -ch avs_depth_core/checkpoints/*/* | tail -1
