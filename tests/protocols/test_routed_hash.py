"""symmetric-hash and last-hop: the kernel's jhash in Python, the scheduler
contract in user space, and the persistence method's registration."""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from lbframe.persistence.last_hop import LastHop
from lbframe.plugins import load_plugins
from lbframe.schedulers.symmetric_hash import (BUCKETS, DEFAULT_SEED, SymmetricHash, jhash,
                                               kernel_bucket, parse_seed)
from lbframe.errors import OptionError
from lbframe.testing import SchedulerContract, context, member


class JhashTests(SynchronousTestCase):
    def test_lookup3_vectors(self):
        # Bob Jenkins' lookup3.c driver5 (hashlittle), which the kernel's
        # jhash() is: the same initial values, mix, final and tail.
        self.assertEqual(jhash(b"", 0), 0xDEADBEEF)
        self.assertEqual(jhash(b"", 0xDEADBEEF), 0xBD5B7DDE)
        self.assertEqual(jhash(b"Four score and seven years ago", 0), 0x17770551)
        self.assertEqual(jhash(b"Four score and seven years ago", 1), 0xCD628161)

    def test_bucket_is_reciprocal_scale(self):
        key = bytes([198, 18, 1, 10, 198, 18, 9, 10])
        self.assertEqual(kernel_bucket("198.18.1.10", "198.18.9.10", 5, 251),
                         (jhash(key, 5) * 251) >> 32)
        self.assertLess(kernel_bucket("2001:db8::1", "2001:db8::2", 5), BUCKETS)

    def test_seed(self):
        self.assertEqual(parse_seed({}), DEFAULT_SEED)
        self.assertEqual(parse_seed({"hash_seed": "0x10"}), 16)
        with self.assertRaises(OptionError):
            parse_seed({"hash_seed": str(1 << 32)})


class SymmetricHashContract(SchedulerContract, SynchronousTestCase):
    factory = SymmetricHash
    options = {"hash_seed": "42"}


class SymmetricHashUserSpaceTests(SynchronousTestCase):
    def test_same_client_same_member_on_two_instances(self):
        a = SymmetricHash(None, {})
        b = SymmetricHash(None, {})
        from lbframe.testing import FakePool
        pa = FakePool(lambda pool, options: a, member("fw1"), member("fw2"))
        pb = FakePool(lambda pool, options: b, member("fw2", 81), member("fw1", 82))
        for i in range(50):
            self.assertEqual(pa.pick(f"198.18.1.{i}"), pb.pick(f"198.18.1.{i}"))
        self.assertEqual({pa.pick(f"198.18.1.{i}") for i in range(50)}, {"fw1", "fw2"})
        self.assertIsNotNone(context())


class LastHopTests(SynchronousTestCase):
    def test_registered_and_keyless_in_user_space(self):
        plugins = load_plugins(entry_points=False)
        self.assertIn("last-hop", plugins.persistence_methods)
        self.assertIn("symmetric-hash", plugins.schedulers)
        self.assertIn("routed", plugins.protocols)
        self.assertIsNone(LastHop(None, {}).key_for(context()))
