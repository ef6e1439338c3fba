# JupyterLab's settings in the dev image (/etc/jupyter). The notebook runs as the host user (compose `user:`); when
# that user is root (a cloud VM, a CI job), Jupyter would refuse to start: allow it then, and only then.
import os

c = get_config()  # noqa: F821 (Jupyter defines it when it reads this file)
c.ServerApp.allow_root = os.getuid() == 0
