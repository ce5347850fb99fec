"""Administrative operations, each written once for the CLI: data directory, certificates, dev setup."""

from postkontor.admin.certs import make_self_signed
from postkontor.admin.datadir import AdminError, init_data_dir, load_data_dir, open_accounts
from postkontor.admin.dev import DEMO_PASSWORD, prepare_dev

__all__ = [
    "DEMO_PASSWORD",
    "AdminError",
    "init_data_dir",
    "load_data_dir",
    "make_self_signed",
    "open_accounts",
    "prepare_dev",
]
