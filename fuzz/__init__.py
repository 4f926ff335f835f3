"""Fuzz targets for the parsers that face the network and the operator.

Each module in :mod:`fuzz.targets` has a ``TestOneInput(data: bytes)``
function: atheris drives it coverage-guided (``python -m fuzz.run``), and
``tests/test_fuzz.py`` runs it over the committed corpus
(``fuzz/corpus/<target>/``) and over hypothesis-generated inputs. A target
asserts an oracle, not only "no crash": see docs/fuzzing.md.
"""
