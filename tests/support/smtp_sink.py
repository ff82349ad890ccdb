"""A real SMTP server on loopback for Tollgate's notification tests (aiosmtpd).

Usage: python smtp_sink.py OUT_DIR [--auth USER:PASSWORD] [--tls-cert CERT --tls-key KEY]

Listens on 127.0.0.1 on a port the OS picks, prints `PORT <n>` once it accepts
connections, and writes every message it accepts to OUT_DIR as one JSON file
{"mail_from", "rcpt_tos", "data", "login"} (written under a temporary name, then renamed,
so a reader never sees half a file). With --auth it offers AUTH PLAIN and LOGIN without
TLS and accepts only that pair. With --tls-cert/--tls-key it offers (and requires)
STARTTLS with that certificate; otherwise it never offers STARTTLS. Exits when stdin
closes.
"""

import argparse
import warnings
import asyncio
import json
import os
import ssl
import sys
import uuid

from aiosmtpd.smtp import SMTP, AuthResult, LoginPassword

# aiosmtpd warns about AUTH without TLS, which is what these tests want.
warnings.filterwarnings("ignore")


class Sink:
    def __init__(self, out_dir):
        self.out_dir = out_dir

    async def handle_DATA(self, server, session, envelope):
        login = session.auth_data if session.authenticated else None
        record = {
            "mail_from": envelope.mail_from,
            "rcpt_tos": envelope.rcpt_tos,
            "data": envelope.original_content.decode("utf-8", "replace"),
            "login": login,
        }
        name = os.path.join(self.out_dir, uuid.uuid4().hex)
        with open(name + ".tmp", "w", encoding="utf-8") as f:
            json.dump(record, f)
        os.replace(name + ".tmp", name + ".json")
        return "250 OK"


def authenticator_for(pair):
    user, _, password = pair.partition(":")

    def authenticate(server, session, envelope, mechanism, auth_data):
        ok = (
            isinstance(auth_data, LoginPassword)
            and auth_data.login.decode() == user
            and auth_data.password.decode() == password
        )
        return AuthResult(success=ok, handled=False, auth_data=user if ok else None)

    return authenticate


async def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("out_dir")
    parser.add_argument("--auth")
    parser.add_argument("--tls-cert")
    parser.add_argument("--tls-key")
    args = parser.parse_args()
    handler = Sink(args.out_dir)
    options = {"hostname": "sink.test", "decode_data": False}
    if args.auth:
        options.update(
            authenticator=authenticator_for(args.auth),
            auth_require_tls=False,
            auth_required=True,
        )
    if args.tls_cert:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(args.tls_cert, args.tls_key)
        options.update(tls_context=context, require_starttls=True)
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: SMTP(handler, **options), "127.0.0.1", 0)
    print(f"PORT {server.sockets[0].getsockname()[1]}", flush=True)
    await loop.run_in_executor(None, sys.stdin.read)
    server.close()


if __name__ == "__main__":
    asyncio.run(main())
