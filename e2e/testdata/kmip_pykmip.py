"""keyflow KMIP end-to-end check with PyKMIP's ProxyKmipClient (mutual TLS).

Usage: python3 kmip_pykmip.py HOST PORT CLIENT_CERT CLIENT_KEY CA_CERT

Runs create, register (symmetric key and secret data), locate, get (refused,
then allowed on exportable keys), activate, encrypt/decrypt, get attributes,
re-key, create key pair with sign and signature verify, MAC, revoke and
destroy. Prints one "ok <step>" line per step and, at the end,
"N passed, 0 failed"; exits non-zero at the first failure.
"""
import os
import sys

from kmip.core import enums
from kmip.core.factories import attributes
from kmip.pie import client as pie_client
from kmip.pie import exceptions, objects

host, port, cert, key, ca = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5]
passed = 0


def ok(step):
    global passed
    passed += 1
    print("ok", step, flush=True)


def fail(step, why):
    print("FAIL", step, why, flush=True)
    print("%d passed, 1 failed" % passed, flush=True)
    sys.exit(1)


factory = attributes.AttributeFactory()
c = pie_client.ProxyKmipClient(hostname=host, port=port, cert=cert, key=key, ca=ca,
                               config_file="/dev/null", kmip_version=enums.KMIPVersion.KMIP_1_2)
with c:
    mask = [enums.CryptographicUsageMask.ENCRYPT, enums.CryptographicUsageMask.DECRYPT]
    uid = c.create(enums.CryptographicAlgorithm.AES, 256, name="pykmip-plain", cryptographic_usage_mask=mask)
    ok("create")

    try:
        c.get(uid)
        fail("get-refused", "Get returned the material of a key that is not exportable")
    except exceptions.KmipOperationFailure as e:
        if e.reason != enums.ResultReason.PERMISSION_DENIED or "not exportable" not in e.message:
            fail("get-refused", "%s %s" % (e.reason, e.message))
    ok("get-refused")

    exp = c.create(enums.CryptographicAlgorithm.AES, 256, operation_policy_name="exportable", name="pykmip-exportable")
    k = c.get(exp)
    if not isinstance(k, objects.SymmetricKey) or len(k.value) != 32:
        fail("get-exportable", repr(k))
    ok("get-exportable")

    material = os.urandom(32)
    sym = objects.SymmetricKey(enums.CryptographicAlgorithm.AES, 256, material, mask, name="pykmip-registered")
    sym.operation_policy_name = "exportable"
    rid = c.register(sym)
    if c.get(rid).value != material:
        fail("register-symmetric", "Get did not return the registered material")
    ok("register-symmetric")

    secret = os.urandom(32)
    sd = objects.SecretData(secret, enums.SecretDataType.PASSWORD, name="pykmip-secret")
    sd.operation_policy_name = "exportable"
    sid = c.register(sd)
    got = c.get(sid)
    if not isinstance(got, objects.SecretData) or got.value != secret:
        fail("register-secret-data", repr(got))
    ok("register-secret-data")

    found = c.locate(attributes=[factory.create_attribute(enums.AttributeType.NAME, "pykmip-plain")])
    if found != [uid]:
        fail("locate", "found %r, want [%s]" % (found, uid))
    ok("locate")

    c.activate(uid)
    ok("activate")

    ct, iv = c.encrypt(b"PyKMIP says hello", uid=uid)
    if c.decrypt(ct, uid=uid) != b"PyKMIP says hello":
        fail("encrypt-decrypt", "round trip failed")
    ok("encrypt-decrypt")

    uid2, attrs = c.get_attributes(uid, ["State", "Cryptographic Algorithm", "Name"])
    got = {a.attribute_name.value: a.attribute_value for a in attrs}
    if got["State"].value != enums.State.ACTIVE or got["Cryptographic Algorithm"].value != enums.CryptographicAlgorithm.AES:
        fail("get-attributes", repr(got))
    ok("get-attributes")

    if c.rekey(uid=uid) != uid:
        fail("rekey", "keyflow keeps the key ID across versions")
    if c.decrypt(ct, uid=uid) != b"PyKMIP says hello":
        fail("rekey", "a ciphertext of the old version no longer decrypts")
    ok("rekey")

    pub, priv = c.create_key_pair(enums.CryptographicAlgorithm.RSA, 3072, private_name="pykmip-signer",
                                  private_usage_mask=[enums.CryptographicUsageMask.SIGN],
                                  public_usage_mask=[enums.CryptographicUsageMask.VERIFY])
    params = {"cryptographic_algorithm": enums.CryptographicAlgorithm.RSA,
              "hashing_algorithm": enums.HashingAlgorithm.SHA_256,
              "padding_method": enums.PaddingMethod.PSS}
    sig = c.sign(b"release v1.0", uid=priv, cryptographic_parameters=params)
    if c.signature_verify(b"release v1.0", sig, uid=pub, cryptographic_parameters=params) != enums.ValidityIndicator.VALID:
        fail("sign-verify", "a good signature did not verify")
    if c.signature_verify(b"release v1.1", sig, uid=pub, cryptographic_parameters=params) != enums.ValidityIndicator.INVALID:
        fail("sign-verify", "a signature verified over another message")
    ok("create-key-pair-sign-verify")

    _, tag = c.mac(b"message", uid=sid, algorithm=enums.CryptographicAlgorithm.HMAC_SHA256)
    import hashlib
    import hmac
    if tag != hmac.new(secret, b"message", hashlib.sha256).digest():
        fail("mac", "the MAC is not HMAC-SHA256 under the registered secret")
    ok("mac")

    c.revoke(enums.RevocationReasonCode.CESSATION_OF_OPERATION, uid)
    _, attrs = c.get_attributes(uid, ["State"])
    if attrs[0].attribute_value.value != enums.State.DEACTIVATED:
        fail("revoke", repr(attrs))
    ok("revoke")

    c.destroy(uid)
    _, attrs = c.get_attributes(uid, ["Destroy Date"])
    if not attrs:
        fail("destroy", "no Destroy Date after Destroy")
    ok("destroy")

print("%d passed, 0 failed" % passed, flush=True)
