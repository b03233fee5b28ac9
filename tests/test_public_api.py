"""``import perceiver`` gives what a user composes with, without importing torch until a name is used."""

import subprocess
import sys

import perceiver


def test_every_public_name_resolves():
    for name in perceiver.__all__:
        assert getattr(perceiver, name) is not None, name
    from perceiver import CausalLanguageModel, load_model  # noqa: F401


def test_import_perceiver_does_not_import_torch():
    code = "import sys, perceiver; print('torch' in sys.modules); perceiver.load_model; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["False", "True"]


def test_internals_leave_the_core_namespace():
    import perceiver.core

    assert not {"linear", "norm_linears", "gelu_linear", "SplitInput"} & set(perceiver.core.__all__)
    import perceiver.adapters

    assert {"TextBytesAdapter", "ImageAdapter"} <= set(perceiver.adapters.__all__)


def test_python_dash_m_perceiver_is_the_command():
    run = subprocess.run([sys.executable, "-m", "perceiver", "list", "tasks"], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    assert "clm" in run.stdout and "mlm" in run.stdout
    bad = subprocess.run([sys.executable, "-m", "perceiver", "train", "no-such-task"], capture_output=True, text=True)
    assert bad.returncode != 0 and "Traceback" not in bad.stderr
