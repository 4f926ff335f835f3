"""examples/web as its README walks through it: a real ``twistd`` process on
free ports, a cart filled over http and continued over https on the same
application server, the static rule, the access log, and the sorry page."""

from __future__ import annotations

import http.cookiejar
import json
import os
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request

from twisted.trial.unittest import SynchronousTestCase

from tests.examples import test_quickstart
from tests.helpers import free_port
from tests.examples.test_quickstart import ROOT, copy_example, wait_for_port

WEB = os.path.join(ROOT, "examples", "web")
PORTS = (8080, 8443, 8405, 8091, 8092, 8093, 8094)


class WebExampleTests(SynchronousTestCase):
    run_lbframe = test_quickstart.QuickstartTests.run_lbframe

    def setUp(self):
        self.dir = os.path.abspath(self.mktemp())
        os.makedirs(self.dir)
        self.ports = {p: free_port() for p in PORTS}
        self.config = copy_example(WEB, self.dir, self.ports,
                                   ["shop_backends.py", "sorry.html", "make_certificate.py"])
        subprocess.run([sys.executable, os.path.join(self.dir, "make_certificate.py")],
                       check=True, capture_output=True, timeout=60)
        self.env = dict(os.environ, PYTHONPATH=ROOT)
        jar = http.cookiejar.CookieJar()
        insecure = ssl.create_default_context()
        insecure.check_hostname = False
        insecure.verify_mode = ssl.CERT_NONE  # the example's self-signed certificate
        self.browser = urllib.request.build_opener(
            urllib.request.HTTPCookieProcessor(jar), urllib.request.HTTPSHandler(context=insecure))

    def get(self, url: str) -> str:
        with self.browser.open(url, timeout=5) as r:
            return r.read().decode()

    def test_cart_survives_the_switch_to_https(self):
        proc = self.run_lbframe()
        wait_for_port(self.ports[8080], proc)
        wait_for_port(self.ports[8443], proc)
        http_base = f"http://127.0.0.1:{self.ports[8080]}"
        https_base = f"https://127.0.0.1:{self.ports[8443]}"
        # Let the http monitor see the app servers up (rise 2, every 2s).
        for _ in range(100):
            try:
                self.get(f"{http_base}/health")
                break
            except urllib.error.HTTPError:
                time.sleep(0.1)
        first = self.get(f"{http_base}/cart/add?item=tea")
        server = first.split()[0]
        self.assertIn("(http)", first)
        for item in ("cups", "pot"):
            self.assertTrue(self.get(f"{https_base}/cart/add?item={item}").startswith(server))
        cart = self.get(f"{https_base}/cart")
        self.assertTrue(cart.startswith(f"{server} (https)"), cart)
        self.assertIn("tea, cups, pot", cart)
        self.assertEqual(self.get(f"{http_base}/static/logo.png"),
                         "static content for /static/logo.png\n")
        wanted = "virtual=shop-http rule=static pool=static member=st1"
        deadline = time.monotonic() + 5
        while True:  # the line is written just after the response
            with open(os.path.join(self.dir, "twistd.log")) as f:
                log = f.read()
            if wanted in log or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        self.assertRegex(log, r"virtual=shop-https rule=- pool=app member=ap\d method=GET "
                              r"target=/cart ")
        self.assertIn("virtual=shop-http rule=static pool=static member=st1", log)

        # Every application server disabled: the sorry page, with its status.
        for member in ("ap1", "ap2", "ap3"):
            request = urllib.request.Request(
                f"http://127.0.0.1:{self.ports[8405]}/api/pools/app/members/{member}",
                data=json.dumps({"state": "disable"}).encode(), method="POST",
                headers={"Content-Type": "application/json"})
            urllib.request.urlopen(request, timeout=5).close()
        with self.assertRaises(urllib.error.HTTPError) as caught:
            self.get(f"{http_base}/cart")
        self.assertEqual(caught.exception.code, 503)
        self.assertIn("closed for a moment", caught.exception.read().decode())
        self.assertEqual(caught.exception.headers["Retry-After"], "60")
