"""Every site file an example ships passes ``lbframe check`` as it comes,
from any working directory (relative paths, such as the web example's
certificate, are read next to the site file)."""

from __future__ import annotations

import contextlib
import glob
import io
import os

from twisted.trial.unittest import SynchronousTestCase

from lbframe.cli import main
from tests.examples.test_quickstart import ROOT


class ShippedSiteFilesTests(SynchronousTestCase):
    def test_every_shipped_site_file_checks(self):
        files = sorted(glob.glob(os.path.join(ROOT, "examples", "*", "site*.ini"))
                       + glob.glob(os.path.join(ROOT, "examples", "*", "node*.ini")))
        self.assertIn(os.path.join(ROOT, "examples", "web", "site.ini"), files)
        for path in files:
            out, err = io.StringIO(), io.StringIO()
            with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
                code = main(["check", path])
            self.assertEqual((code, err.getvalue()), (0, ""), path)
            self.assertIn("OK", out.getvalue(), path)
