"""
The package as users get it: the wheel's contents, the plugin as twistd
finds it once installed, and the README commands that CI relies on.
"""

import functools
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from twisted.trial.unittest import SkipTest, SynchronousTestCase

from tests.harness import TWISTD, run_isolated

ROOT = Path(__file__).resolve().parent.parent
TEST_COMMAND = (
    "python3 -m venv venv && venv/bin/pip install '.[test]' && venv/bin/python -m pytest"
)


@functools.cache
def wheel_names():
    """
    The names in a wheel built from a copy of the checkout, once per test
    run: a copy, so that no build/ left in the checkout (by an earlier
    build, or one running beside it) adds or hides anything.
    """
    litter = shutil.ignore_patterns(
        ".git", "build", "dist", "*.egg-info", "__pycache__", "_trial_temp*", "*venv", ".*cache",
        ".hypothesis", "dropin.cache",
    )
    with tempfile.TemporaryDirectory() as directory:
        source, out = Path(directory) / "source", Path(directory) / "wheel"
        shutil.copytree(ROOT, source, symlinks=True, ignore=litter)
        subprocess.run(
            [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(out), str(source)],
            check=True,
            capture_output=True,
            timeout=300,
        )
        [wheel] = out.glob("udpchat-*.whl")
        with zipfile.ZipFile(wheel) as archive:
            return frozenset(archive.namelist())


class WheelTests(SynchronousTestCase):
    """
    The built wheel ships the package and the plugin file, and nothing that
    would shadow Twisted's own packages.
    """

    def setUp(self):
        self.names = wheel_names()

    def test_wheel_ships_the_plugin_file(self):
        """The wheel holds twisted/plugins/udpchat_plugin.py."""
        self.assertIn("twisted/plugins/udpchat_plugin.py", self.names)

    def test_wheel_does_not_shadow_twisted(self):
        """The wheel holds no twisted/__init__.py nor twisted/plugins/__init__.py."""
        self.assertNotIn("twisted/__init__.py", self.names)
        self.assertNotIn("twisted/plugins/__init__.py", self.names)

    def test_wheel_ships_every_module(self):
        """Every module of the udpchat package is in the wheel."""
        modules = {f"udpchat/{path.name}" for path in (ROOT / "udpchat").glob("*.py")}
        self.assertEqual(modules - self.names, set())


class PluginTests(SynchronousTestCase):
    """
    twistd finds the installed plugin, from any working directory.
    """

    def test_twistd_lists_udpchat(self):
        """twistd --help, run outside the checkout, lists the udpchat command."""
        result = run_isolated([TWISTD, "--help"])
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertRegex(result.stdout.decode(), r"\n\s+udpchat\s+A group-chat server")

    def test_udpchat_help_documents_the_options(self):
        """twistd udpchat --help names every option with its default."""
        result = run_isolated([TWISTD, "udpchat", "--help"])
        self.assertEqual(result.returncode, 0, result.stderr)
        usage = result.stdout.decode()
        for option in ("--port=", "--interface=", "--max-reply-bytes=", "--log-level="):
            self.assertIn(option, usage)
        self.assertIn("12345", usage)
        self.assertIn("1200", usage)


class ReadmeTests(SynchronousTestCase):
    """
    README.rst's commands are the ones CI runs.
    """

    def test_ci_runs_the_readme_test_command(self):
        """.ci/run runs the exact test command that README.rst gives users."""
        self.assertIn(TEST_COMMAND, (ROOT / "README.rst").read_text())
        self.assertIn(TEST_COMMAND, (ROOT / ".ci" / "run").read_text())

    def test_readme_opens_with_install_and_run_commands(self):
        """The first commands of README.rst install and start server and client."""
        readme = (ROOT / "README.rst").read_text()
        server = readme.index("venv/bin/twistd -n udpchat --port 12345")
        client = readme.index("venv/bin/python -m udpchat.client 127.0.0.1 12345")
        tests = readme.index(TEST_COMMAND)
        self.assertLess(max(server, client, tests), readme.index("A session"))


class GitTests(SynchronousTestCase):
    """
    What git keeps of the checkout: not what running the project writes.
    """

    def git(self, *args):
        """Run git C{args} in the checkout; return the CompletedProcess."""
        if shutil.which("git") is None:
            raise SkipTest("needs git")
        return subprocess.run(
            ["git", "-C", str(ROOT), *args], capture_output=True, timeout=60,
            stdin=subprocess.DEVNULL,
        )

    def setUp(self):
        inside = self.git("rev-parse", "--is-inside-work-tree")
        if inside.returncode != 0 or inside.stdout.strip() != b"true":
            said = inside.stderr.decode("utf-8", "replace").strip().splitlines() or ["no"]
            raise SkipTest(f"needs a git checkout that git will read ({said[0]})")

    def test_benchmark_results_are_not_kept(self):
        """benchmarks/results/latest.json, which each benchmark run writes, is ignored and untracked."""
        latest = "benchmarks/results/latest.json"
        self.assertEqual(self.git("check-ignore", "-q", "--no-index", latest).returncode, 0)
        self.assertEqual(self.git("ls-files", latest).stdout, b"")
