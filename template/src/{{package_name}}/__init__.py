"""The project's package. Yours to edit: model.py, train.py, config.py. The train -> serve contract: artifacts.py.
The model server's plumbing, maintained by the template (`copier update`): serving/."""

from ._cpu import limit_threads

# Before numpy or the framework is imported anywhere in the package: size the native thread pools to the
# container's CPU quota, not to the host's core count.
limit_threads()

__version__ = "0.1.0"
