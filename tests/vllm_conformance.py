"""``make vllm-conformance``: the vLLM engine against the real vLLM 0.32.0 code, on CPU, without installing vLLM.

Downloads the vllm 0.32.0 wheel into a temporary directory (pip, no dependencies), unpacks its Python files, adds
the few pure-Python packages its imports need (``--target`` in the same directory; the project's venv is not
touched), then, in a child process where that directory is on ``sys.path``:

1. builds ``VLLMEngine`` with ``vllm.LLM`` replaced by a recorder that passes every keyword argument to vLLM's own
   ``EngineArgs`` (an unknown one raises there), and checks the fake vLLM's field list against ``EngineArgs``;
2. builds every ``SamplingParams`` the engine sends (greedy and sampled, n = 1 and 8, top-p/top-k, seeds) with
   vLLM's own class, which validates them;
3. round-trips a weight-sync message through vLLM's own ``MsgpackEncoder``/``MsgpackDecoder`` (what
   ``collective_rpc`` does with ``VLLM_ENABLE_V1_MULTIPROCESSING=1``) and checks every tensor arrives bit-exact;
4. checks the methods and variables the engine and the Ray pool rely on exist (``collective_rpc``, ``sleep``,
   ``wake_up``, ``LLMEngine.reset_encoder_cache``, ``VLLM_RAY_BUNDLE_INDICES``).

``python tests/vllm_conformance.py [--wheel PATH]`` (``--wheel`` reuses a downloaded wheel).
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import os
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

VERSION = "0.32.0"
ROOT = Path(__file__).resolve().parents[1]
# What importing vllm.engine.arg_utils, vllm.sampling_params and vllm.v1.serial_utils needs beyond the project's
# own dependencies (found by importing them on CPU, 2026-11).
DEPS = [
    "msgspec",
    "cbor2",
    "pyzmq",
    "cachetools",
    "py-cpuinfo",
    "pybase64",
    "uvloop",
    "openai",
    "openai-harmony",
    "sniffio",
    "aiohttp",
    "multidict",
    "yarl",
    "propcache",
    "aiohappyeyeballs",
    "aiosignal",
    "frozenlist",
]


def prepare(work: Path, wheel: Path | None) -> tuple[Path, Path]:
    pip = [sys.executable, "-m", "pip"]
    if wheel is None:
        subprocess.run(
            [*pip, "download", f"vllm=={VERSION}", "--no-deps", "-d", str(work / "wheel")], check=True
        )
        wheel = next((work / "wheel").glob("vllm-*.whl"))
    src = work / "src"
    with zipfile.ZipFile(wheel) as archive:
        archive.extractall(
            src, [n for n in archive.namelist() if n.startswith("vllm/") and n.endswith(".py")]
        )
    deps = work / "deps"
    subprocess.run([*pip, "install", "-q", "--no-deps", "--target", str(deps), *DEPS], check=True)
    return src, deps


def check() -> None:  # runs in the child process, with the real vllm importable
    importlib.import_module("invert4tvg")  # first: the CPU torchvision shim, before vllm imports torchvision
    import torch
    import vllm
    from vllm.engine.arg_utils import EngineArgs
    from vllm.sampling_params import SamplingParams
    from vllm.v1.serial_utils import MsgpackDecoder, MsgpackEncoder

    from invert4tvg.config import ModelArguments
    from invert4tvg.policy.tiny_model import build_tiny_model
    from invert4tvg.rollout.base import SamplingParams as Sampling
    from invert4tvg.rollout.vllm_engine import VLLMEngine, _vllm_n, wire_chunks
    from invert4tvg.rollout.vllm_worker import decode_wire_chunk

    assert Path(vllm.__file__).parts[-3] == "src", vllm.__file__
    failures: list[str] = []

    # 1. LLM keyword arguments against EngineArgs
    sent: dict = {}

    class Recorder:
        def __init__(self, model: str, **kwargs):
            EngineArgs(model=model, **kwargs)  # raises TypeError for a keyword vLLM does not know
            sent.update(kwargs, model=model)
            config = type("C", (), {"eos_token_id": 2})()
            self.llm_engine = type("E", (), {"model_config": type("M", (), {"hf_config": config})()})()

        def sleep(self, level=1, mode="abort"):
            pass

    vllm.LLM = Recorder
    with tempfile.TemporaryDirectory() as tmp:
        model = build_tiny_model(Path(tmp), seed=0)
        args = ModelArguments(model_name_or_path=str(model), dtype="float32")
        for options in (
            {},
            {"colocate": True, "tensor_parallel_size": 2, "distributed_executor_backend": "ray"},
        ):
            engine = VLLMEngine(args, max_model_len=4096, enforce_eager=True, **options)
            print(f"EngineArgs accepts the engine's LLM(...) with {options or 'defaults'}: {sorted(sent)}")
    fake = importlib.util.spec_from_file_location("fake_vllm", ROOT / "tests/fakes/vllm/__init__.py")
    module = importlib.util.module_from_spec(fake)
    sys.modules["fake_vllm"] = module  # its dataclasses look their module up
    fake.loader.exec_module(module)
    real_fields = {f.name for f in dataclasses.fields(EngineArgs)}
    if real_fields != module.ENGINE_ARGS_FIELDS:
        failures.append(
            f"the fake's EngineArgs fields differ: {sorted(module.ENGINE_ARGS_FIELDS ^ real_fields)}"
        )

    # 2. every SamplingParams the engine sends
    count = 0
    for temperature in (0.0, 0.7, 1.0):
        for n in (1, 8):
            for top_p, top_k in ((1.0, 0), (0.9, 20)):
                for seed in (None, 5):
                    sampling = Sampling(
                        temperature=temperature, top_p=top_p, top_k=top_k, max_tokens=64, seed=seed
                    )
                    engine._vllm = type("V", (), {"SamplingParams": SamplingParams})
                    try:
                        engine._sampling_params(_vllm_n(n, sampling), sampling, seed)
                        count += 1
                    except Exception as err:
                        failures.append(f"SamplingParams rejected temperature={temperature} n={n}: {err}")
    print(f"vLLM's SamplingParams accepted {count} parameter sets the engine sends")

    # 3. a weight-sync message through vLLM's own msgpack encoder and decoder
    generator = torch.Generator().manual_seed(0)
    weights = {
        "model.language_model.layers.0.self_attn.q_proj.weight": torch.randn(64, 32, generator=generator),
        "model.language_model.norm.weight": torch.randn(7, generator=generator),
        "lm_head.weight": torch.randn(100, 32, generator=generator),
    }
    weights = {
        k: v.to(torch.bfloat16 if i % 2 == 0 else torch.float16) for i, (k, v) in enumerate(weights.items())
    }
    received = {}
    for index, data in wire_chunks(weights, chunk_bytes=8192):
        message = ("invert4tvg_load_weights", None, (index, data), {})
        _, _, args, _ = MsgpackDecoder().decode(MsgpackEncoder().encode(message))
        received.update(decode_wire_chunk(*args))
    bad = [k for k in weights if k not in received or not torch.equal(received[k], weights[k])]
    if bad or received.keys() != weights.keys():
        failures.append(f"weights changed through vLLM's msgpack: {bad}")
    old = MsgpackDecoder().decode(MsgpackEncoder().encode([("w", weights["lm_head.weight"])]))
    print(
        f"a tensor sent as such arrives as {old[0][1]!r}; the packed chunks arrive bit-exact ({len(received)} tensors)"
    )

    # 4. methods and variables the engine relies on
    from vllm import envs

    if (
        "VLLM_RAY_BUNDLE_INDICES" not in dir(envs)
        and "VLLM_RAY_BUNDLE_INDICES" not in envs.environment_variables
    ):
        failures.append("vllm.envs has no VLLM_RAY_BUNDLE_INDICES")
    llm_py = (Path(vllm.__file__).parent / "entrypoints/llm.py").read_text()
    engine_py = (Path(vllm.__file__).parent / "v1/engine/llm_engine.py").read_text()
    for name in ("collective_rpc", "sleep", "wake_up", "reset_prefix_cache", "reset_mm_cache"):
        if f"    def {name}(" not in llm_py:
            failures.append(f"vllm.LLM has no {name}")
    if "    def reset_encoder_cache(" not in engine_py:
        failures.append("LLMEngine has no reset_encoder_cache")
    if failures:
        print("FAILED:\n  " + "\n  ".join(failures))
        raise SystemExit(1)
    print(f"vLLM {VERSION} conformance: all checks passed")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--wheel", type=Path, help="a downloaded vllm-0.32.0 wheel")
    parser.add_argument("--check", action="store_true", help=argparse.SUPPRESS)
    options = parser.parse_args()
    if options.check:
        check()
        return
    with tempfile.TemporaryDirectory(prefix="vllm-conformance-") as tmp:
        src, deps = prepare(Path(tmp), options.wheel)
        env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(src), str(deps), str(ROOT)]))
        env.setdefault("HF_HUB_OFFLINE", "1")
        result = subprocess.run([sys.executable, __file__, "--check"], env=env, cwd=tmp)
    raise SystemExit(result.returncode)


if __name__ == "__main__":
    main()
