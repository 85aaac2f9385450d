"""Admin resources: setups and DNS verification, use cases, keys, inbound endpoints."""

from __future__ import annotations

import base64
import socket
import uuid
from collections.abc import Iterator
from typing import Any, get_args

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from starlette.applications import Starlette
from starlette.testclient import TestClient

from adapters import admin_store
from adapters.dns import dkim_ok, dmarc_ok, lookup_txt, spf_ok
from adapters.http.admin import Permission, admin_operations, mask_transport
from adapters.http.errors import exception_handlers
from adapters.storage import Storage
from adapters.workspaces import PERMISSIONS, NewWorkspace, create_workspace, hash_key
from tests.api.dnsserver import DnsServer, split_txt

INCLUDE = "spf.test-relay.example"
ARN = "arn:aws:sns:us-east-1:123456789012:ses-events"
GENERIC_SECRET = "whsec_" + base64.b64encode(b"0123456789abcdef0123").decode()
MAILGUN_KEY = "key-mailgun-signing-secret-42"
POSTMARK_PASSWORD = "postmark-basic-auth-secret-42"
SMTP_PASSWORD = "smtp-s3cret-pa55"


def auth(api_key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {api_key}"}


def sendgrid_key(curve: ec.EllipticCurve | None = None) -> str:
    key = ec.generate_private_key(curve or ec.SECP256R1())
    der = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return base64.b64encode(der).decode()


class Admin:
    """One workspace's admin, talking to the service."""

    def __init__(self, client: TestClient, workspace: NewWorkspace) -> None:
        self.client = client
        self.workspace_id = workspace.workspace_id
        self.key = workspace.api_key

    def url(self, path: str) -> str:
        return f"/v1/{self.workspace_id}{path}"

    def get(self, path: str) -> Any:
        return self.client.get(self.url(path), headers=auth(self.key))

    def post(self, path: str, body: Any = None) -> Any:
        return self.client.post(self.url(path), json=body, headers=auth(self.key))

    def delete(self, path: str) -> Any:
        return self.client.delete(self.url(path), headers=auth(self.key))

    def setup(self, domain: str = "mail.acme.example") -> dict[str, Any]:
        response = self.post("/email/setup", {"domain": domain})
        assert response.status_code == 201, response.text
        answer: dict[str, Any] = response.json()
        return answer

    def use_case(self, setup_id: str, **fields: Any) -> Any:
        body = {
            "name": "receipts",
            "channel": "email",
            "setup_id": setup_id,
            "from_address": "billing@mail.acme.example",
            "email_type": "transactional",
            "transport": "sandbox",
            **fields,
        }
        return self.post("/use-case", body)


@pytest.fixture
def client(storage: Storage, monkeypatch: pytest.MonkeyPatch) -> Iterator[TestClient]:
    monkeypatch.setenv("MAILLEDGER_SPF_INCLUDE", INCLUDE)
    app = Starlette(
        routes=[op.route() for op in admin_operations()],
        exception_handlers=exception_handlers(),
    )
    app.state.storage = storage
    with TestClient(app) as test_client:
        yield test_client


@pytest.fixture
def acme(client: TestClient, storage: Storage) -> Admin:
    return Admin(client, create_workspace(storage.engine, "Acme"))


@pytest.fixture
def other(client: TestClient, storage: Storage) -> Admin:
    return Admin(client, create_workspace(storage.engine, "Other"))


@pytest.fixture
def dns_server(monkeypatch: pytest.MonkeyPatch) -> Iterator[DnsServer]:
    server = DnsServer().start()
    monkeypatch.setenv("MAILLEDGER_DNS_RESOLVER", server.address)
    try:
        yield server
    finally:
        server.stop()


def publish(server: DnsServer, setup: dict[str, Any], *, skip: str = "") -> None:
    """Put a setup's records on the test DNS server, like its owner would."""
    for record, kind in zip(setup["records"], ("SPF", "DKIM", "DMARC"), strict=True):
        if kind != skip:
            server.records[record["name"]] = [split_txt(record["value"])]


def verified_setup(acme: Admin, storage: Storage, domain: str = "mail.acme.example") -> str:
    setup = acme.setup(domain)
    admin_store.set_dns_verified(storage.engine, setup["id"], True)
    return str(setup["id"])


# Authentication and request errors ------------------------------------------------------


def test_no_key_is_401(acme: Admin) -> None:
    response = acme.client.get(acme.url("/email/setup"))
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "unauthorized"


def test_unknown_key_is_401(acme: Admin) -> None:
    response = acme.client.get(acme.url("/keys"), headers=auth("mlk_not-a-key"))
    assert response.status_code == 401


def test_key_without_admin_permission_is_403(acme: Admin) -> None:
    created = acme.post("/keys", {"name": "viewer", "permissions": ["Channel.view"]}).json()
    for path in ("/email/setup", "/use-case", "/keys", "/email/inbound"):
        response = acme.client.get(acme.url(path), headers=auth(created["api_key"]))
        assert response.status_code == 403, path
        assert response.json()["error"]["code"] == "forbidden"


def test_another_workspaces_path_is_403(acme: Admin, other: Admin) -> None:
    response = acme.client.get(other.url("/keys"), headers=auth(acme.key))
    assert response.status_code == 403


def test_oversized_body_is_413(acme: Admin) -> None:
    response = acme.post("/email/setup", {"domain": "a.example", "pad": "x" * 1_100_000})
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "payload_too_large"


def test_malformed_json_is_400(acme: Admin) -> None:
    response = acme.client.post(
        acme.url("/email/setup"),
        content=b'{"domain": ',
        headers={**auth(acme.key), "content-type": "application/json"},
    )
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "bad_request"


def test_body_that_is_not_an_object_is_422(acme: Admin) -> None:
    assert acme.post("/keys", ["Channel.view"]).status_code == 422


def test_path_id_that_is_not_a_uuid_is_404(acme: Admin) -> None:
    assert acme.get("/email/setup/not-a-uuid").status_code == 404
    assert acme.post("/email/setup/not-a-uuid/verify").status_code == 404
    assert acme.get("/use-case/12").status_code == 404
    assert acme.delete("/keys/nope").status_code == 404
    assert acme.get("/email/inbound/nope").status_code == 404


# Setups ---------------------------------------------------------------------------------


def test_setup_answers_the_three_records_to_publish(acme: Admin) -> None:
    setup = acme.setup("Mail.Acme.Example")
    assert set(setup) == {"id", "domain", "dns_verified", "records"}
    assert uuid.UUID(setup["id"])
    assert setup["domain"] == "mail.acme.example"
    assert setup["dns_verified"] is False
    spf, dkim, dmarc = setup["records"]
    assert spf == {
        "type": "TXT",
        "name": "mail.acme.example",
        "value": f"v=spf1 include:{INCLUDE} ~all",
    }
    assert dkim["type"] == "TXT"
    assert dkim["name"].endswith("._domainkey.mail.acme.example")
    assert dkim["value"].startswith("v=DKIM1; k=rsa; p=")
    assert dmarc == {
        "type": "TXT",
        "name": "_dmarc.mail.acme.example",
        "value": "v=DMARC1; p=none;",
    }


def test_spf_include_defaults_when_unset(acme: Admin, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MAILLEDGER_SPF_INCLUDE")
    spf = acme.setup()["records"][0]
    assert spf["value"] == "v=spf1 include:spf.mailledger.local ~all"


def test_dkim_record_is_the_public_half_of_the_stored_rsa_2048_key(
    acme: Admin, storage: Storage
) -> None:
    setup = acme.setup()
    stored = admin_store.get_setup(storage.engine, acme.workspace_id, setup["id"])
    assert stored is not None
    private = serialization.load_pem_private_key(stored.dkim_private_key.encode(), None)
    assert isinstance(private, rsa.RSAPrivateKey)
    assert private.key_size == 2048
    dkim = setup["records"][1]
    assert dkim["name"] == f"{stored.dkim_selector}._domainkey.mail.acme.example"
    published = serialization.load_der_public_key(base64.b64decode(dkim["value"].split("p=")[1]))
    assert isinstance(published, rsa.RSAPublicKey)
    signature = private.sign(b"message", padding.PKCS1v15(), hashes.SHA256())
    published.verify(signature, b"message", padding.PKCS1v15(), hashes.SHA256())
    assert "PRIVATE" not in acme.get(f"/email/setup/{setup['id']}").text


def test_each_setup_has_its_own_key(acme: Admin) -> None:
    first = acme.setup("one.example")["records"][1]
    second = acme.setup("two.example")["records"][1]
    assert first["value"] != second["value"]


@pytest.mark.parametrize(
    "domain",
    ["localhost", "not a domain", "-bad.example", "bad-.example", "a..example", "1.2.3.4", ""],
)
def test_setup_of_an_invalid_domain_is_422(acme: Admin, domain: str) -> None:
    response = acme.post("/email/setup", {"domain": domain})
    assert response.status_code == 422
    assert "domain" in response.json()["error"]["message"]


def test_setup_without_a_domain_is_422(acme: Admin) -> None:
    assert acme.post("/email/setup", {}).status_code == 422


def test_same_domain_twice_is_409(acme: Admin) -> None:
    acme.setup("mail.acme.example")
    response = acme.post("/email/setup", {"domain": "MAIL.acme.example"})
    assert response.status_code == 409
    assert response.json()["error"]["code"] == "conflict"


def test_setups_are_listed_and_read(acme: Admin) -> None:
    first = acme.setup("one.example")
    second = acme.setup("two.example")
    assert acme.get("/email/setup").json() == {"setups": [first, second]}
    assert acme.get(f"/email/setup/{second['id']}").json() == second
    assert acme.get(f"/email/setup/{uuid.uuid4()}").status_code == 404


# DNS verification -----------------------------------------------------------------------


def test_verify_with_every_record_published_is_verified(acme: Admin, dns_server: DnsServer) -> None:
    setup = acme.setup()
    publish(dns_server, setup)
    response = acme.post(f"/email/setup/{setup['id']}/verify")
    assert response.status_code == 200
    answer = response.json()
    assert answer["id"] == setup["id"]
    assert answer["dns_verified"] is True
    assert [(c["record"], c["ok"]) for c in answer["checks"]] == [
        ("SPF", True),
        ("DKIM", True),
        ("DMARC", True),
    ]
    # the 2048-bit key is served as several strings; the check sees them joined
    assert answer["checks"][1]["found"] == [setup["records"][1]["value"]]
    assert acme.get(f"/email/setup/{setup['id']}").json()["dns_verified"] is True


def test_verify_without_dmarc_is_not_verified(acme: Admin, dns_server: DnsServer) -> None:
    setup = acme.setup()
    publish(dns_server, setup, skip="DMARC")
    answer = acme.post(f"/email/setup/{setup['id']}/verify").json()
    assert answer["dns_verified"] is False
    assert answer["checks"][2] == {"record": "DMARC", "ok": False, "found": []}
    assert answer["checks"][0]["ok"] is True
    assert answer["checks"][1]["ok"] is True
    assert acme.get(f"/email/setup/{setup['id']}").json()["dns_verified"] is False


def test_verify_stores_a_later_failure(acme: Admin, dns_server: DnsServer) -> None:
    setup = acme.setup()
    publish(dns_server, setup)
    assert acme.post(f"/email/setup/{setup['id']}/verify").json()["dns_verified"] is True
    dns_server.records[setup["records"][0]["name"]] = [["v=spf1 -all"]]
    answer = acme.post(f"/email/setup/{setup['id']}/verify").json()
    assert answer["dns_verified"] is False
    assert answer["checks"][0] == {"record": "SPF", "ok": False, "found": ["v=spf1 -all"]}


def test_verify_of_a_wrong_dkim_key_fails(acme: Admin, dns_server: DnsServer) -> None:
    setup = acme.setup()
    publish(dns_server, setup)
    other_key = acme.setup("other.example")["records"][1]["value"]
    dns_server.records[setup["records"][1]["name"]] = [split_txt(other_key)]
    checks = acme.post(f"/email/setup/{setup['id']}/verify").json()["checks"]
    assert checks[1]["ok"] is False
    assert checks[1]["found"] == [other_key]


def test_verify_with_an_unusable_resolver_setting_is_503(
    acme: Admin, monkeypatch: pytest.MonkeyPatch
) -> None:
    setup = acme.setup()
    monkeypatch.setenv("MAILLEDGER_DNS_RESOLVER", "no-port-here")
    response = acme.post(f"/email/setup/{setup['id']}/verify")
    assert response.status_code == 503
    assert "MAILLEDGER_DNS_RESOLVER" in response.json()["error"]["message"]


def test_lookup_of_a_silent_resolver_finds_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as silent:
        silent.bind(("127.0.0.1", 0))
        monkeypatch.setenv("MAILLEDGER_DNS_RESOLVER", f"127.0.0.1:{silent.getsockname()[1]}")
        assert lookup_txt("mail.acme.example", timeout=0.2) == []


def test_record_checks_follow_the_rfcs() -> None:
    include = "spf.x.example"
    assert spf_ok([f"v=spf1 ip4:192.0.2.1 include:{include} ~all"], include)
    assert spf_ok([f"v=spf1 +include:{include.upper()} -all", "google-site=x"], include)
    assert not spf_ok([f"v=spf1 include:{include}", "v=spf1 -all"], include)  # two SPF
    assert not spf_ok(["v=spf1 include:other.example ~all"], include)
    assert not spf_ok([f"include:{include}"], include)
    assert dkim_ok(["v=DKIM1; k=rsa; p=AB CD\tEF"], "ABCDEF")
    assert not dkim_ok(["v=DKIM1; k=rsa; p=ABCDEG"], "ABCDEF")
    assert dmarc_ok(["v=DMARC1; p=reject; rua=mailto:d@x.example"])
    assert not dmarc_ok(["v=DMARC1; p=none", "v=DMARC1; p=reject"])
    assert not dmarc_ok(["p=none; v=DMARC1"])


# Use cases ------------------------------------------------------------------------------


def test_sandbox_use_case_needs_no_verified_setup(acme: Admin) -> None:
    setup = acme.setup()
    response = acme.use_case(setup["id"], from_address="Billing@MAIL.acme.example")
    assert response.status_code == 201
    answer = response.json()
    assert set(answer) == {
        "id",
        "name",
        "channel",
        "setup_id",
        "from_address",
        "email_type",
        "transport",
        "created_at",
    }
    assert answer["from_address"] == "Billing@mail.acme.example"
    assert answer["transport"] == "sandbox"
    assert answer["created_at"].endswith("Z")
    assert acme.get(f"/use-case/{answer['id']}").json() == answer
    assert acme.get("/use-case").json() == {"use_cases": [answer]}


def test_smtp_use_case_on_an_unverified_setup_is_409(acme: Admin) -> None:
    setup = acme.setup()
    response = acme.use_case(setup["id"], transport="smtp://relay.example:587")
    assert response.status_code == 409


def test_smtp_use_case_never_shows_its_password(acme: Admin, storage: Storage) -> None:
    setup_id = verified_setup(acme, storage)
    transport = f"smtp://mailer:{SMTP_PASSWORD}@relay.example:587"
    response = acme.use_case(setup_id, transport=transport, email_type="marketing")
    assert response.status_code == 201
    answer = response.json()
    assert answer["transport"] == "smtp://mailer:***@relay.example:587"
    for text in (
        response.text,
        acme.get("/use-case").text,
        acme.get(f"/use-case/{answer['id']}").text,
    ):
        assert SMTP_PASSWORD not in text
    stored = admin_store.get_use_case(storage.engine, acme.workspace_id, answer["id"])
    assert stored is not None
    assert stored.transport == transport
    assert stored.email_type == "marketing"


def test_transport_masking() -> None:
    assert mask_transport("sandbox") == "sandbox"
    assert mask_transport("smtp://relay.example") == "smtp://relay.example"
    assert mask_transport("smtp://u@relay.example:25") == "smtp://u@relay.example:25"
    assert mask_transport("smtp://u:p%40ss@relay.example:25") == "smtp://u:***@relay.example:25"


@pytest.mark.parametrize(
    ("fields", "named"),
    [
        ({"from_address": "billing@elsewhere.example"}, "from_address"),
        ({"from_address": "billing@sub.mail.acme.example"}, "from_address"),
        ({"from_address": "not an address"}, "from_address"),
        ({"from_address": "a b@mail.acme.example"}, "from_address"),
        ({"channel": "sms"}, "channel"),
        ({"email_type": "newsletter"}, "email_type"),
        ({"transport": "ftp://relay.example"}, "transport"),
        ({"transport": "smtp://"}, "transport"),
        ({"transport": "smtp://relay.example:99999"}, "transport"),
        ({"transport": "SANDBOX!"}, "transport"),
        ({"name": ""}, "name"),
        ({"name": "   "}, "name"),
        ({"name": "nul\u0000byte"}, "name"),
        ({"transport": "smtp://relay.example\u0000:25"}, "transport"),
    ],
)
def test_invalid_use_case_is_422(
    acme: Admin, storage: Storage, fields: dict[str, str], named: str
) -> None:
    setup_id = verified_setup(acme, storage)
    response = acme.use_case(setup_id, **fields)
    assert response.status_code == 422, response.text
    assert named in response.json()["error"]["message"]


def test_use_case_of_an_unknown_setup_is_404(acme: Admin) -> None:
    assert acme.use_case(str(uuid.uuid4())).status_code == 404
    assert acme.use_case("not-a-uuid").status_code == 404


def test_unknown_use_case_is_404(acme: Admin) -> None:
    assert acme.get(f"/use-case/{uuid.uuid4()}").status_code == 404


# Keys -----------------------------------------------------------------------------------


def test_created_key_is_shown_once_and_works(acme: Admin, storage: Storage) -> None:
    response = acme.post("/keys", {"name": "deployer", "permissions": ["Workspace.admin"]})
    assert response.status_code == 201
    created = response.json()
    assert set(created) == {"id", "name", "permissions", "api_key"}
    assert created["permissions"] == ["Workspace.admin"]
    listed = acme.client.get(acme.url("/keys"), headers=auth(created["api_key"]))
    assert listed.status_code == 200
    keys = listed.json()["keys"]
    assert [k["name"] for k in keys] == ["admin", "deployer"]
    assert all(set(k) == {"id", "name", "permissions", "created_at"} for k in keys)
    assert created["api_key"] not in listed.text
    assert hash_key(created["api_key"]) not in listed.text


def test_deleted_key_stops_working_at_once(acme: Admin) -> None:
    created = acme.post("/keys", {"name": "ci", "permissions": ["Workspace.admin"]}).json()
    headers = auth(created["api_key"])
    assert acme.client.get(acme.url("/keys"), headers=headers).status_code == 200
    assert acme.delete(f"/keys/{created['id']}").status_code == 204
    response = acme.client.get(acme.url("/keys"), headers=headers)
    assert response.status_code == 401
    assert created["id"] not in acme.get("/keys").text
    assert acme.delete(f"/keys/{created['id']}").status_code == 404


def test_key_permissions_are_kept_in_canonical_order(acme: Admin) -> None:
    created = acme.post(
        "/keys", {"name": "app", "permissions": ["Channel.view", "Channel.send", "Channel.view"]}
    ).json()
    assert created["permissions"] == ["Channel.send", "Channel.view"]


@pytest.mark.parametrize(
    "body",
    [
        {"name": "x", "permissions": []},
        {"name": "x", "permissions": ["Root"]},
        {"name": "x", "permissions": ["Channel.send", "Everything"]},
        {"name": "x", "permissions": "Channel.send"},
        {"name": "x"},
        {"name": "", "permissions": ["Channel.send"]},
        {"name": "  ", "permissions": ["Channel.send"]},
        {"name": "line\nbreak", "permissions": ["Channel.send"]},
    ],
)
def test_invalid_key_is_422(acme: Admin, body: dict[str, Any]) -> None:
    assert acme.post("/keys", body).status_code == 422


def test_permission_choices_are_the_workspaces_permissions() -> None:
    assert get_args(Permission) == PERMISSIONS


def test_unknown_key_delete_is_404(acme: Admin) -> None:
    assert acme.delete(f"/keys/{uuid.uuid4()}").status_code == 404


# Inbound endpoints ----------------------------------------------------------------------


def _bodies() -> list[dict[str, Any]]:
    return [
        {
            "provider": "ses",
            "sns_topic_arns": [ARN, "arn:aws-cn:sns:cn-north-1:123456789012:t.fifo"],
        },
        {"provider": "sendgrid", "public_key": sendgrid_key()},
        {"provider": "mailgun", "signing_key": MAILGUN_KEY},
        {"provider": "postmark", "username": "hooks", "password": POSTMARK_PASSWORD},
        {"provider": "generic", "secret": GENERIC_SECRET},
    ]


def test_endpoint_of_each_provider_answers_its_url(acme: Admin, storage: Storage) -> None:
    for body in _bodies():
        response = acme.post("/email/inbound", body)
        assert response.status_code == 201, response.text
        answer = response.json()
        assert answer["provider"] == body["provider"]
        assert answer["url"] == f"/hooks/{body['provider']}/{answer['id']}"
        assert answer["setup_id"] is None
        stored = admin_store.get_endpoint(storage.engine, answer["id"])
        assert stored is not None
        assert stored.workspace_id == acme.workspace_id
        assert stored.config == {k: v for k, v in body.items() if k != "provider"}


def test_endpoint_shows_what_is_public(acme: Admin) -> None:
    ses, sendgrid, _mailgun, postmark, _generic = _bodies()
    assert acme.post("/email/inbound", ses).json()["sns_topic_arns"] == ses["sns_topic_arns"]
    assert acme.post("/email/inbound", sendgrid).json()["public_key"] == sendgrid["public_key"]
    assert acme.post("/email/inbound", postmark).json()["username"] == "hooks"


def test_endpoint_with_a_setup(acme: Admin) -> None:
    setup = acme.setup()
    body = {"provider": "mailgun", "signing_key": MAILGUN_KEY, "setup_id": setup["id"]}
    answer = acme.post("/email/inbound", body).json()
    assert answer["setup_id"] == setup["id"]
    assert acme.get(f"/email/inbound/{answer['id']}").json() == answer


def test_endpoint_with_an_unknown_setup_is_404(acme: Admin) -> None:
    body = {"provider": "mailgun", "signing_key": MAILGUN_KEY, "setup_id": str(uuid.uuid4())}
    assert acme.post("/email/inbound", body).status_code == 404


def test_sendgrid_key_in_pem_is_stored_as_base64_der(acme: Admin) -> None:
    der = sendgrid_key()
    pem = "-----BEGIN PUBLIC KEY-----\n" + der + "\n-----END PUBLIC KEY-----\n"
    answer = acme.post("/email/inbound", {"provider": "sendgrid", "public_key": pem}).json()
    assert answer["public_key"] == der


def _rsa_public_key() -> str:
    key = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    der = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return base64.b64encode(der).decode()


@pytest.mark.parametrize(
    ("body", "named"),
    [
        ({"provider": "ses", "sns_topic_arns": []}, "sns_topic_arns"),
        ({"provider": "ses"}, "sns_topic_arns"),
        ({"provider": "ses", "sns_topic_arns": ["arn:aws:sqs:us-east-1:123456789012:q"]}, "sns"),
        ({"provider": "ses", "sns_topic_arns": ["arn:aws:sns:us-east-1:1234:t"]}, "sns"),
        ({"provider": "ses", "sns_topic_arns": [ARN + "\n"]}, "sns_topic_arns"),
        ({"provider": "sendgrid", "public_key": "not base64!"}, "public_key"),
        ({"provider": "sendgrid", "public_key": base64.b64encode(b"junk").decode()}, "public_key"),
        ({"provider": "sendgrid", "public_key": "RSA"}, "public_key"),
        ({"provider": "sendgrid", "public_key": "P384"}, "public_key"),
        ({"provider": "mailgun", "signing_key": ""}, "signing_key"),
        ({"provider": "mailgun", "signing_key": "  "}, "signing_key"),
        ({"provider": "postmark", "username": "", "password": "p"}, "username"),
        ({"provider": "postmark", "username": "u", "password": ""}, "password"),
        ({"provider": "postmark", "username": "u"}, "password"),
        ({"provider": "postmark", "username": "a:b", "password": "p"}, "username"),
        ({"provider": "postmark", "username": "u", "password": "p\u0000"}, "password"),
        ({"provider": "generic", "secret": ""}, "secret"),
        ({"provider": "generic", "secret": base64.b64encode(b"x" * 24).decode()}, "secret"),
        (
            {"provider": "generic", "secret": "whsec_" + base64.b64encode(b"short").decode()},
            "secret",
        ),
        ({"provider": "generic", "secret": "whsec_not*base64*at*all*!!"}, "secret"),
        ({"provider": "sparkpost", "secret": GENERIC_SECRET}, "provider"),
        ({"secret": GENERIC_SECRET}, "provider"),
    ],
)
def test_invalid_endpoint_is_422(acme: Admin, body: dict[str, Any], named: str) -> None:
    if body.get("public_key") == "RSA":
        body = {**body, "public_key": _rsa_public_key()}
    elif body.get("public_key") == "P384":
        body = {**body, "public_key": sendgrid_key(ec.SECP384R1())}
    response = acme.post("/email/inbound", body)
    assert response.status_code == 422, response.text
    assert named in response.json()["error"]["message"]


def test_unknown_endpoint_is_404(acme: Admin, storage: Storage) -> None:
    assert acme.get(f"/email/inbound/{uuid.uuid4()}").status_code == 404
    assert admin_store.get_endpoint(storage.engine, str(uuid.uuid4())) is None


# Secrets and tenants --------------------------------------------------------------------


def populate(admin: Admin, storage: Storage) -> dict[str, str]:
    """One of each resource; their ids by kind."""
    setup_id = verified_setup(admin, storage)
    transport = f"smtp://mailer:{SMTP_PASSWORD}@relay.example:587"
    use_case = admin.use_case(setup_id, transport=transport).json()
    key = admin.post("/keys", {"name": "ci", "permissions": ["Channel.send"]}).json()
    endpoints = [admin.post("/email/inbound", body).json() for body in _bodies()]
    ids = {"setup": setup_id, "use_case": use_case["id"], "key": key["id"]}
    ids.update({e["provider"]: e["id"] for e in endpoints})
    ids["api_key"] = key["api_key"]
    return ids


def test_no_secret_is_ever_in_a_get_answer(acme: Admin, storage: Storage) -> None:
    ids = populate(acme, storage)
    stored = admin_store.get_setup(storage.engine, acme.workspace_id, ids["setup"])
    assert stored is not None
    secrets = [
        SMTP_PASSWORD,
        MAILGUN_KEY,
        POSTMARK_PASSWORD,
        GENERIC_SECRET,
        GENERIC_SECRET.removeprefix("whsec_"),
        ids["api_key"],
        hash_key(ids["api_key"]),
        stored.dkim_private_key.splitlines()[1],
        "PRIVATE KEY",
    ]
    paths = [
        "/email/setup",
        f"/email/setup/{ids['setup']}",
        "/use-case",
        f"/use-case/{ids['use_case']}",
        "/keys",
        "/email/inbound",
        *(
            f"/email/inbound/{ids[p]}"
            for p in ("ses", "sendgrid", "mailgun", "postmark", "generic")
        ),
    ]
    for path in paths:
        response = acme.get(path)
        assert response.status_code == 200, path
        for secret in secrets:
            assert secret not in response.text, (path, secret)


def test_another_workspaces_admin_cannot_reach_its_resources(
    acme: Admin, other: Admin, storage: Storage
) -> None:
    ids = populate(acme, storage)
    outsider = Admin(acme.client, NewWorkspace(acme.workspace_id, other.key))
    for path in (
        "/email/setup",
        f"/email/setup/{ids['setup']}",
        "/use-case",
        f"/use-case/{ids['use_case']}",
        "/keys",
        "/email/inbound",
        f"/email/inbound/{ids['mailgun']}",
    ):
        assert outsider.get(path).status_code == 403, path
    assert outsider.post(f"/email/setup/{ids['setup']}/verify").status_code == 403
    assert outsider.delete(f"/keys/{ids['key']}").status_code == 403
    assert outsider.post("/keys", {"name": "x", "permissions": ["Channel.send"]}).status_code == 403


def test_another_workspaces_resources_are_404_on_its_own_path(
    acme: Admin, other: Admin, storage: Storage
) -> None:
    ids = populate(acme, storage)
    assert other.get(f"/email/setup/{ids['setup']}").status_code == 404
    assert other.post(f"/email/setup/{ids['setup']}/verify").status_code == 404
    assert other.get(f"/use-case/{ids['use_case']}").status_code == 404
    assert other.delete(f"/keys/{ids['key']}").status_code == 404
    assert other.get(f"/email/inbound/{ids['generic']}").status_code == 404
    assert other.use_case(ids["setup"]).status_code == 404
    body = {"provider": "mailgun", "signing_key": MAILGUN_KEY, "setup_id": ids["setup"]}
    assert other.post("/email/inbound", body).status_code == 404
    # the key other could not delete still works
    response = acme.client.get(acme.url("/keys"), headers=auth(ids["api_key"]))
    assert response.status_code == 403  # a Channel.send key: alive, but not an admin


def test_lists_hold_only_the_workspaces_own(acme: Admin, other: Admin, storage: Storage) -> None:
    populate(acme, storage)
    own_setup = other.setup("mail.other.example")
    assert other.get("/email/setup").json() == {"setups": [own_setup]}
    assert other.get("/use-case").json() == {"use_cases": []}
    assert other.get("/email/inbound").json() == {"endpoints": []}
    assert [k["name"] for k in other.get("/keys").json()["keys"]] == ["admin"]
    assert len(acme.get("/email/inbound").json()["endpoints"]) == 5
