"""kamado (竈): a Japanese foundation-model build kit. See README.md and recipes/."""

__version__ = "0.1.0"
