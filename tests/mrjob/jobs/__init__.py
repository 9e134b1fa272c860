"""Job scripts used by the mrjob tests. Each file runs standalone (``python FILE.py``), as
mrjob's local and hadoop runners execute it in a task's working directory: they import
``mr_jobs`` only, never the ``tests`` package."""
