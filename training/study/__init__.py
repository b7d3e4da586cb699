"""The paper study (``pvae-report``), kept apart from the training flow.

It trains the model zoo with the training flow (:mod:`pvae.training.train`, :mod:`pvae.training.evaluate`,
...) and measures the paper's claims (Vafaii, Galor & Yates, NeurIPS 2024) on the results. The study
imports the training flow, never the other way round (``tests/test_dependencies.py`` checks it):

- :mod:`.report`: the ``pvae-report`` command, which runs the study end to end;
- :mod:`.config`: what it trains and measures, and the smoke / quick / cpu / full presets;
- :mod:`.sparse_coding`: LCA and (F)ISTA, the non-amortised reference;
- :mod:`.geometry` and :mod:`.shattering`: few-label kNN comparisons and shattering dimensionality;
- :mod:`.verdict`: each claim's verdict, computed from the numbers;
- :mod:`.figures` and :mod:`.document`: the figures and the Markdown / HTML report.
"""
