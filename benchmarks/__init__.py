"""rfmx's benchmark suite: ``python -m benchmarks --help`` (run from the repository top).

Not part of the installed package.  Modules:

- :mod:`benchmarks.contenders` — what each contender computes, written as its own users
  would write it, and the checksum that proves they all computed the same thing;
- :mod:`benchmarks.child` — runs one contender once in a fresh process and measures it;
- :mod:`benchmarks.data` — creates or reuses order histories made by ``rfmx generate``
  and the files derived from them (increment split, k-means features, BG/NBD summaries);
- :mod:`benchmarks.report` — machine info, Markdown, JSON and plots;
- :mod:`benchmarks.__main__` — the command line and the run plan.

See docs/benchmarks.md.
"""
