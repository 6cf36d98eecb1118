"""User-facing errors: the CLI prints them as one line and exits with code 2."""


class DroilError(Exception):
    """Bad input from the user (file, argument, spec): reported without a traceback."""


class SpecError(DroilError):
    """A robot spec is missing, malformed, or disagrees with its model."""


class PerturbationError(DroilError):
    """A perturbation string or file names something unknown or has a bad value."""
