"""The TVM backend's tests need the optional extra ``tvm`` (apache-tvm); without it they
skip, saying so."""

import pytest

pytest.importorskip("tvm", reason="Apache TVM is not installed: pip install 'torsh-gen[tvm]'")
