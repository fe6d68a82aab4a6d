"""Build step (setuptools ``cmdclass``, see pyproject.toml): install ``invert4tvg-torchvision.pth`` next to the package.

Python runs ``import`` lines of ``.pth`` files in site-packages at every interpreter start, so the torchvision shim
(``invert4tvg/_compat.py``) is in place in processes that never import invert4tvg: vLLM's and Ray's workers, a
plain ``from trl import GRPOConfig``. It costs one small import at start-up (the shim defers torch until torchvision
is imported). Wheels carry the file at their root; an editable install (``pip install -e``) gets it through the
install directory that setuptools' ``editable_wheel`` prepares (the unpacked wheel), since nothing of ``build_lib``
reaches an editable wheel. ``pip uninstall`` removes it with the package.
"""

from __future__ import annotations

from pathlib import Path

from setuptools.command.build_py import build_py

PTH_NAME = "invert4tvg-torchvision.pth"
PTH_LINE = "import invert4tvg._compat\n"


class BuildPy(build_py):
    def run(self) -> None:
        super().run()
        root = self.build_lib
        if self.editable_mode:
            root = self.distribution.get_command_obj("install").install_lib
        Path(root, PTH_NAME).write_text(PTH_LINE)

    def get_outputs(self, include_bytecode: bool = True) -> list[str]:
        outputs = super().get_outputs(include_bytecode)
        return outputs if self.editable_mode else [*outputs, str(Path(self.build_lib, PTH_NAME))]
