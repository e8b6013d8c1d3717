"""Stand-in for ansible-test's pip bootstrap script (get-pip.py).

ansible-test downloads get-pip.py from its own CI file host to put pip into the virtual
environments it creates for sanity tests. That host is not reachable from our machines (only the
package registries are), so `make sanity` places this file in ansible-test's cache instead: it
bootstraps the interpreter's bundled pip with ensurepip (in a child process: ensurepip points
PIP_CONFIG_FILE at /dev/null, which would hide the machine's pip configuration), then lets pip
install exactly what ansible-test asked for (for example pip==24.2) from the package index.
"""
import subprocess
import sys

subprocess.check_call([sys.executable, "-m", "ensurepip", "--upgrade"], stdout=subprocess.DEVNULL)
args = [a for a in sys.argv[1:] if a not in ("--no-setuptools", "--no-wheel")]
sys.exit(subprocess.call([sys.executable, "-m", "pip", "install", *args]))
