"""Compose a noise-gated pair (``model.name: noise_gated_pair``) from its config and its two networks' weights.

    python scripts/compose_noise_gated_pair.py configs/lka-nafnet-w12-denoise-real-v2.yaml \\
        --mild lka-nafnet-w12-denoise-real --strong runs/lka-nafnet-w12-denoise-strong/checkpoints/last.pt \\
        -o nafrestore/weights/lka-nafnet-w12-denoise-real-v2.safetensors
    python scripts/compose_noise_gated_pair.py configs/lka-nafnet-w12-denoise-real-v3.yaml --refilter \\
        --mild lka-nafnet-w12-denoise-real --strong lka-nafnet-w12-denoise-real-v2 \\
        -o nafrestore/weights/lka-nafnet-w12-denoise-real-v3.safetensors

Each network's weights (a registry name, run directory, checkpoint or export; a ``last.pt``'s EMA weights) must
have the architecture the config gives it; a noise-gated pair (e.g. ``default``) gives its network of that role,
so a new mild network can be paired with the shipped strong one. With ``--refilter`` the config's residual filter
(``loading.RESIDUAL_FILTER_ARGS``: settings without parameters) may differ from the one a network
was trained with (v3 above: the first default's weights with a content-adaptive high-pass). Writes a safetensors export
(the config in its metadata, as ``nafrestore export`` writes one), atomically; ``nafrestore.load_model(OUT)``
loads it.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from nafrestore.errors import NafrestoreError
from nafrestore.inference.export import export_spec
from nafrestore.loading import pair_spec


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("config", type=Path, help="the pair's YAML config (model.name: noise_gated_pair)")
    parser.add_argument("--mild", required=True, help="the mild network's weights")
    parser.add_argument("--strong", required=True, help="the strong network's weights")
    parser.add_argument("-o", "--output", type=Path, required=True, help="the .safetensors file to write")
    parser.add_argument(
        "--refilter", action="store_true", help="the config's residual filter may differ from the networks' own"
    )
    args = parser.parse_args()
    try:
        spec = pair_spec(args.config, args.mild, args.strong, refilter=args.refilter)
        export_spec(spec, args.output, format="safetensors")
    except NafrestoreError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"wrote {args.output}: {spec.source}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
