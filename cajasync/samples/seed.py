"""A realistic sample back office: every down topic filled, deterministic for a seed.

    counts = seed_catalog(engine, products=100_000, customers=5_000, images=True)

A shop chain with locations L1, L2 and points of sale PV1-PV3: company, users (MASTER,
ADMIN, SUPERVISOR, CASHIER; each user's password is its key, e.g. `cajero1`, hashed with
scrypt), permissions, taxes, a certificate, brands, families, reports, settings; products
with EAN-13 barcodes (and, with `images`, a distinct fake PNG each); customers (always
"Consumidor Final"); a chart of accounts; payment methods and receipt books per point of
sale (keys `PV1/efectivo`, `PV1/FB`); banks and cards; suppliers; sellers; stock of every
product per location (keys `L1/000123`); combos, offers, news, tables and rooms.
Everything goes through `outbox.catalog.upsert_many`, one transaction per chunk.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import random
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from decimal import Decimal
from functools import cached_property
from typing import Final

from sqlalchemy.engine import Engine

from outbox import catalog
from schemas.records import (
    Account,
    BankCard,
    Brand,
    Certificate,
    Combo,
    ComboItem,
    Company,
    Customer,
    Family,
    News,
    Offer,
    PaymentMethod,
    Permission,
    Product,
    ReceiptBook,
    Record,
    Report,
    Role,
    Seller,
    Setting,
    StockLevel,
    Supplier,
    Table,
    Tax,
    User,
)

CHUNK: Final = 5000
SEED_DATE: Final = dt.datetime(2026, 11, 1, tzinfo=dt.UTC)
PNG_SIGNATURE: Final = b"\x89PNG\r\n\x1a\n"
CENT: Final = Decimal("0.01")

BRANDS: Final = (
    "La Serenísima", "Arcor", "Molinos", "Marolio", "Playadito", "Taragüí", "Quilmes",
    "Coca-Cola", "Ledesma", "Knorr", "Bagley", "Terrabusi", "Sancor", "Paty", "Skip",
    "Ala", "Dove", "Colgate", "Natura", "Cif",
)  # fmt: skip
FAMILIES: Final = (
    ("almacen", "Almacén", None), ("infusiones", "Infusiones", "almacen"),
    ("galletitas", "Galletitas", "almacen"), ("bebidas", "Bebidas", None),
    ("gaseosas", "Gaseosas", "bebidas"), ("cervezas", "Cervezas", "bebidas"),
    ("lacteos", "Lácteos", None), ("limpieza", "Limpieza", None),
    ("perfumeria", "Perfumería", None), ("congelados", "Congelados", None),
    ("fiambres", "Fiambres", None), ("panaderia", "Panadería", None),
)  # fmt: skip
GOODS: Final = (
    ("Yerba mate", "infusiones"), ("Té en saquitos", "infusiones"), ("Café molido", "infusiones"),
    ("Galletitas dulces", "galletitas"), ("Galletitas de agua", "galletitas"),
    ("Gaseosa cola", "gaseosas"), ("Agua mineral", "bebidas"), ("Cerveza rubia", "cervezas"),
    ("Leche entera", "lacteos"), ("Yogur bebible", "lacteos"), ("Queso cremoso", "lacteos"),
    ("Fideos tallarines", "almacen"), ("Arroz largo fino", "almacen"), ("Azúcar", "almacen"),
    ("Aceite de girasol", "almacen"), ("Detergente", "limpieza"), ("Lavandina", "limpieza"),
    ("Jabón en polvo", "limpieza"), ("Shampoo", "perfumeria"), ("Pasta dental", "perfumeria"),
    ("Hamburguesas", "congelados"), ("Jamón cocido", "fiambres"), ("Pan lactal", "panaderia"),
)  # fmt: skip
SIZES: Final = ("250 g", "500 g", "1 kg", "1 l", "1,5 l", "2,25 l", "x 6", "x 12", "400 ml")
FIRST_NAMES: Final = (
    "María", "Juan", "Ana", "Carlos", "Lucía", "Jorge", "Sofía", "Diego", "Valeria", "Martín",
    "Paula", "Pablo", "Laura", "Gustavo", "Carolina", "Federico",
)  # fmt: skip
LAST_NAMES: Final = (
    "González", "Rodríguez", "Gómez", "Fernández", "López", "Díaz", "Martínez", "Pérez",
    "García", "Sánchez", "Romero", "Sosa", "Álvarez", "Torres", "Ruiz", "Ramírez",
)  # fmt: skip
NEWS: Final = (
    ("Semana del ahorro", "Hasta 30% de descuento en almacén."),
    ("Nuevos horarios", "Abrimos de lunes a domingo de 8 a 22."),
    ("Pagá con QR", "Reintegro del 10% pagando con transferencia o QR."),
    ("Cuotas sin interés", "Hasta 12 cuotas con Visa y Mastercard Galicia."),
    ("Club Del Plata", "Sumá puntos con cada compra."),
)
STREETS: Final = ("Av. Corrientes", "San Martín", "Belgrano", "Mitre", "Rivadavia", "Sarmiento")


@dataclass(frozen=True)
class Batch:
    """Records of one scope, written in one transaction."""

    scope: str
    records: Sequence[Record]


def seed_catalog(
    engine: Engine,
    *,
    products: int,
    customers: int = 0,
    images: bool = False,
    locations: Sequence[str] = ("L1", "L2"),
    points_of_sale: Sequence[str] = ("PV1", "PV2", "PV3"),
    seed: int = 0,
    on_progress: Callable[[int, int], None] | None = None,
) -> dict[str, int]:
    """Fill every down topic; return records written per topic (and `images` stored).

    `on_progress(done, total)` is called after every transaction with records written so
    far. Re-running with the same arguments changes nothing (identical upserts are skipped).
    """
    sample = Sample(seed, products, customers, images, locations, points_of_sale)
    total = sample.total()
    counts: dict[str, int] = {}
    done = 0
    for batch in sample.batches(engine):
        with engine.begin() as connection:
            catalog.upsert_many(connection, batch.records, scope=batch.scope)
        for record in batch.records:
            counts[record.topic] = counts.get(record.topic, 0) + 1
        done += len(batch.records)
        if on_progress is not None:
            on_progress(done, total)
    if images:
        counts["images"] = sample.images_stored
    return counts


class Sample:
    """The generator behind `seed_catalog`: one random stream, records in dependency order."""

    def __init__(
        self,
        seed: int,
        products: int,
        customers: int,
        images: bool,
        locations: Sequence[str],
        points_of_sale: Sequence[str],
    ) -> None:
        self.rng = random.Random(seed)
        self.seed, self.products, self.customers, self.images = seed, products, customers, images
        self.locations, self.points_of_sale = tuple(locations), tuple(points_of_sale)
        self.images_stored = 0
        self.catalogue: list[Product] = []

    def total(self) -> int:
        """How many records `batches` yields (for a progress bar)."""
        fixed = len(self.config) + len(self.accounts()) + len(self.bank_cards())
        fixed += len(self.suppliers()) + len(self.sellers()) + len(self.tables()) + len(NEWS)
        per_pos = sum(
            len(self.payment_methods(i)) + len(self.receipt_books(i))
            for i in range(len(self.points_of_sale))
        )
        stock = self.products * len(self.locations)
        extras = self.combo_count() + self.offer_count() + 1  # + Consumidor Final
        return fixed + per_pos + self.products + stock + self.customers + extras

    def batches(self, engine: Engine) -> Iterator[Batch]:
        """Every batch to write, topics that others refer to first."""
        yield Batch("all", self.config)
        yield Batch("all", self.accounts() + self.bank_cards() + self.suppliers() + self.sellers())
        for index, pos in enumerate(self.points_of_sale):
            yield Batch(f"pos.{pos}", self.payment_methods(index) + self.receipt_books(index))
        for start in range(1, self.products + 1, CHUNK):
            chunk = range(start, min(start + CHUNK, self.products + 1))
            yield Batch("all", self.product_chunk(engine, chunk))
        for location in self.locations:
            for start in range(0, len(self.catalogue), CHUNK):
                yield Batch(f"loc.{location}", self.stock(location, start))
        for start in range(0, self.customers + 1, CHUNK):
            yield Batch("all", self.customer_chunk(start))
        yield Batch("all", self.combos() + self.offers() + self.news(engine) + self.tables())

    # -- configuracion -------------------------------------------------------------------

    @cached_property
    def config(self) -> list[Record]:
        """Company, users, permissions, taxes, certificate, brands, families, reports, settings."""
        company = Company(
            key="company",
            name="Almacenes Del Plata S.R.L.",
            tax_id="30-71234567-9",
            address="Av. Corrientes 1234, CABA",
            phone="+54 11 4321-0000",
            email="administracion@delplata.example",
        )
        return [
            company,
            *self.permissions(),
            *self.users(),
            Tax(key="iva-21", name="IVA 21%", rate=Decimal(21)),
            Tax(key="iva-10.5", name="IVA 10,5%", rate=Decimal("10.5")),
            Tax(key="exento", name="Exento", rate=Decimal(0)),
            self.certificate(),
            *(Brand(key=_slug(name), name=name) for name in BRANDS),
            *(Family(key=key, name=name, parent=parent) for key, name, parent in FAMILIES),
            *self.reports(),
            *self.settings(),
        ]

    def permissions(self) -> list[Permission]:
        grants: dict[str, tuple[Role, ...]] = {
            "sales.sell": ("MASTER", "ADMIN", "SUPERVISOR", "CASHIER"),
            "sales.discount": ("MASTER", "ADMIN", "SUPERVISOR"),
            "sales.void": ("MASTER", "ADMIN", "SUPERVISOR"),
            "cash.payout": ("MASTER", "ADMIN", "SUPERVISOR"),
            "fiscal.z-close": ("MASTER", "ADMIN", "SUPERVISOR"),
            "sync.pull": ("MASTER", "ADMIN", "SUPERVISOR", "CASHIER"),
            "tools.delete-synced": ("MASTER", "ADMIN"),
            "tools.delete-local": ("MASTER", "ADMIN"),
            "config.edit": ("MASTER",),
        }
        return [
            Permission(key=key, name=key.replace(".", " ").title(), roles=list(roles))
            for key, roles in grants.items()
        ]

    def users(self) -> list[User]:
        people: tuple[tuple[str, str, Role], ...] = (
            ("master", "Administrador general", "MASTER"),
            ("admin", "Laura Gómez", "ADMIN"),
            ("supervisor", "Carlos Díaz", "SUPERVISOR"),
            ("cajero1", "Ana Pérez", "CASHIER"),
            ("cajero2", "Diego Sosa", "CASHIER"),
            ("cajero3", "Paula Romero", "CASHIER"),
        )
        grants = self.permissions()
        return [
            User(
                key=key,
                name=name,
                role=role,
                password_hash=scrypt_hash(key, self.rng.randbytes(16)),
                permissions=[p.key for p in grants if role in p.roles],
            )
            for key, name, role in people
        ]

    def certificate(self) -> Certificate:
        der = hashlib.shake_256(f"{self.seed}:certificate".encode()).digest(600)
        body = base64.encodebytes(der).decode().strip()
        return Certificate(
            key="afip-2026",
            name="Factura electrónica 2026",
            subject="CN=delplata-pos, O=Almacenes Del Plata S.R.L., serialNumber=CUIT 30712345679",
            valid_from=SEED_DATE - dt.timedelta(days=30),
            valid_to=SEED_DATE + dt.timedelta(days=700),
            pem=f"-----BEGIN CERTIFICATE-----\n{body}\n-----END CERTIFICATE-----\n",
        )

    def reports(self) -> list[Report]:
        return [
            Report(key="ticket", name="Ticket", template="{company}\n{lines}\nTOTAL {total}"),
            Report(key="factura-a", name="Factura A", template="{company}\nA {number}\n{lines}"),
            Report(key="cierre-z", name="Cierre Z", template="Z {number}\n{taxes}\n{methods}"),
            Report(key="informe-x", name="Informe X", template="X {date}\n{methods}"),
        ]

    def settings(self) -> list[Setting]:
        values = {
            "currency": "ARS",
            "locale": "es-AR",
            "decimal-places": "2",
            "default-price-list": "minorista",
            "ticket-footer": "¡Gracias por su compra!",
            "max-discount-pct": "15",
            "allow-negative-stock": "false",
            "fiscal-printer": "Hasar SMH/P-441F",
        }
        return [Setting(key=key, value=value) for key, value in values.items()]

    # -- catalogue, parties and stock ------------------------------------------------------

    def product_chunk(self, engine: Engine, numbers: range) -> list[Record]:
        """Products `numbers`; with images, their PNGs are stored first (same transaction
        order as a back office would: image, then the record that refers to it)."""
        shas: list[str | None] = [None] * len(numbers)
        if self.images:
            pngs = [fake_png(f"{self.seed}:product:{n}", self.rng) for n in numbers]
            with engine.begin() as connection:
                shas = list(catalog.put_images(connection, pngs))
            self.images_stored += len(pngs)
        chunk = [self.product(n, sha) for n, sha in zip(numbers, shas, strict=True)]
        self.catalogue.extend(chunk)
        return list(chunk)

    def product(self, number: int, image: str | None) -> Product:
        rng = self.rng
        good, family = GOODS[rng.randrange(len(GOODS))]
        brand = BRANDS[rng.randrange(len(BRANDS))]
        price = (Decimal(rng.randrange(30_000, 5_000_000)) / 100).quantize(CENT)
        food = family not in ("limpieza", "perfumeria")
        tax = Decimal("10.5") if food and rng.random() < 0.6 else Decimal(21)
        if rng.random() < 0.02:
            tax = Decimal(0)
        barcodes = [ean13(f"779{number:09d}")]
        if rng.random() < 0.1:
            barcodes.append(ean13(f"780{number:09d}"))
        return Product(
            key=f"{number:06d}",
            name=f"{good} {brand} {SIZES[rng.randrange(len(SIZES))]}",
            barcodes=barcodes,
            brand=_slug(brand),
            family=family,
            price=price,
            prices={"mayorista": (price * Decimal("0.85")).quantize(CENT)},
            tax_rate=tax,
            active=rng.random() > 0.01,
            image=image,
        )

    def stock(self, location: str, start: int) -> list[Record]:
        rng = self.rng
        return [
            StockLevel(
                key=f"{location}/{product.key}",
                product=product.key,
                quantity=Decimal(rng.randrange(0, 250)),
                minimum=Decimal(rng.choice((0, 5, 10, 20))),
            )
            for product in self.catalogue[start : start + CHUNK]
        ]

    def customer_chunk(self, start: int) -> list[Record]:
        """Customers `start`..; number 0 is the generic "Consumidor Final"."""
        chunk: list[Record] = []
        if start == 0:
            chunk.append(Customer(key="CF", name="Consumidor Final"))
        rng = self.rng
        for number in range(max(start, 1), min(start + CHUNK, self.customers + 1)):
            first, last = rng.choice(FIRST_NAMES), rng.choice(LAST_NAMES)
            chunk.append(
                Customer(
                    key=f"C{number:06d}",
                    name=f"{first} {last}",
                    tax_id=f"20-{rng.randrange(10_000_000, 45_000_000)}-{rng.randrange(10)}",
                    address=f"{rng.choice(STREETS)} {rng.randrange(1, 5000)}",
                    email=f"{_slug(first)}.{_slug(last)}{number}@mail.example",
                    phone=f"+54 11 {rng.randrange(4000, 6999)}-{rng.randrange(10_000):04d}",
                    credit_limit=Decimal(rng.choice((0, 0, 50_000, 200_000))),
                    price_list="mayorista" if rng.random() < 0.1 else None,
                )
            )
        return chunk

    def accounts(self) -> list[Record]:
        chart = (
            ("1", "Activo", "asset", None), ("1.1", "Caja", "asset", "1"),
            ("1.1.01", "Caja chica", "asset", "1.1"), ("1.2", "Bancos", "asset", "1"),
            ("1.3", "Deudores por ventas", "asset", "1"), ("1.4", "Mercaderías", "asset", "1"),
            ("2", "Pasivo", "liability", None), ("2.1", "Proveedores", "liability", "2"),
            ("2.2", "IVA débito fiscal", "liability", "2"),
            ("3", "Patrimonio neto", "equity", None),
            ("3.1", "Capital", "equity", "3"), ("4", "Ingresos", "income", None),
            ("4.1", "Ventas", "income", "4"), ("5", "Egresos", "expense", None),
            ("5.1", "Costo de ventas", "expense", "5"), ("5.2", "Sueldos", "expense", "5"),
            ("5.3", "Servicios", "expense", "5"),
        )  # fmt: skip
        return [
            Account(key=key, name=name, kind=kind, parent=parent)  # type: ignore[arg-type]
            for key, name, kind, parent in chart
        ]

    def bank_cards(self) -> list[Record]:
        cards = (
            ("visa-galicia", "Banco Galicia", "Visa", 12, "0"),
            ("master-galicia", "Banco Galicia", "Mastercard", 12, "0"),
            ("visa-nacion", "Banco Nación", "Visa", 6, "0"),
            ("cabal-credicoop", "Banco Credicoop", "Cabal", 3, "0"),
            ("amex-santander", "Banco Santander", "American Express", 6, "2.5"),
            ("naranja", "Tarjeta Naranja", "Naranja X", 6, "3"),
            ("maestro-nacion", "Banco Nación", "Maestro", 1, "0"),
            ("visa-debito-bbva", "BBVA", "Visa Débito", 1, "0"),
        )
        return [
            BankCard(key=key, bank=bank, card=card, max_installments=n, surcharge_pct=Decimal(pct))
            for key, bank, card, n, pct in cards
        ]

    def payment_methods(self, index: int) -> list[Record]:
        """Payment methods of the `index`-th point of sale (the last ones take no vouchers)."""
        pos = self.points_of_sale[index]
        methods = [
            ("efectivo", "Efectivo", "cash", None),
            ("debito", "Tarjeta de débito", "debit", "maestro-nacion"),
            ("visa", "Visa crédito", "card", "visa-galicia"),
            ("master", "Mastercard crédito", "card", "master-galicia"),
            ("transferencia", "Transferencia / QR", "transfer", None),
            ("cuenta-corriente", "Cuenta corriente", "account", None),
        ]
        if index % 3 != 2:
            methods.append(("vale", "Vale de mercadería", "voucher", None))
        return [
            PaymentMethod(key=f"{pos}/{code}", name=name, kind=kind, bank_card=card)  # type: ignore[arg-type]
            for code, name, kind, card in methods
        ]

    def receipt_books(self, index: int) -> list[Record]:
        pos = self.points_of_sale[index]
        books = (
            ("FA", "Factura A", "factura", "A"),
            ("FB", "Factura B", "factura", "B"),
            ("TK", "Ticket", "ticket", ""),
            ("NCA", "Nota de crédito A", "nota-credito", "A"),
            ("NCB", "Nota de crédito B", "nota-credito", "B"),
        )
        return [
            ReceiptBook(
                key=f"{pos}/{code}",
                name=f"{name} {pos}",
                voucher_type=kind,
                letter=letter,
                next_number=1 + 37 * (index + 1) * len(code),
            )
            for code, name, kind, letter in books
        ]

    def suppliers(self) -> list[Record]:
        names = (
            ("PR001", "Distribuidora Norte S.A.", "goods"), ("PR002", "Lácteos del Sur", "goods"),
            ("PR003", "Bebidas Andinas S.R.L.", "goods"), ("PR004", "Limpieza Total", "goods"),
            ("PR005", "Panificadora San José", "goods"), ("GS001", "Edenor", "expenses"),
            ("GS002", "AySA", "expenses"), ("GS003", "Telecom", "expenses"),
            ("EM001", "Ana Pérez", "employee"), ("EM002", "Diego Sosa", "employee"),
            ("EM003", "Paula Romero", "employee"),
        )  # fmt: skip
        return [
            Supplier(key=key, name=name, kind=kind, tax_id=f"30-{70_000_000 + i}-{i % 10}")  # type: ignore[arg-type]
            for i, (key, name, kind) in enumerate(names)
        ]

    def sellers(self) -> list[Record]:
        return [
            Seller(
                key=f"V{n:02d}",
                name=f"{FIRST_NAMES[n % len(FIRST_NAMES)]} {LAST_NAMES[(3 * n) % len(LAST_NAMES)]}",
                commission_pct=Decimal(n % 3),
            )
            for n in range(1, 9)
        ]

    # -- combos, offers, news, tables ------------------------------------------------------

    def combo_count(self) -> int:
        return min(20, self.products // 5)

    def combos(self) -> list[Record]:
        rng, combos = self.rng, list[Record]()
        for number in range(1, self.combo_count() + 1):
            items = rng.sample(self.catalogue, rng.randint(2, 4))
            quantities = [Decimal(rng.randint(1, 3)) for _ in items]
            full = sum((p.price * q for p, q in zip(items, quantities, strict=True)), Decimal(0))
            combos.append(
                Combo(
                    key=f"CB{number:03d}",
                    name="Combo " + " + ".join(p.name.split(" ")[0] for p in items),
                    price=(full * Decimal("0.9")).quantize(CENT),
                    items=[
                        ComboItem(product=p.key, quantity=q)
                        for p, q in zip(items, quantities, strict=True)
                    ],
                )
            )
        return combos

    def offer_count(self) -> int:
        return min(50, (self.products + 19) // 20)

    def offers(self) -> list[Record]:
        rng = self.rng
        chosen = rng.sample(self.catalogue, self.offer_count())
        return [
            Offer(
                key=f"OF{number:03d}",
                product=product.key,
                price=(product.price * Decimal("0.8")).quantize(CENT),
                valid_from=SEED_DATE,
                valid_to=SEED_DATE + dt.timedelta(days=rng.choice((7, 30, 60))),
            )
            for number, product in enumerate(chosen, 1)
        ]

    def news(self, engine: Engine) -> list[Record]:
        shas: list[str | None] = [None] * len(NEWS)
        if self.images:
            pngs = [fake_png(f"{self.seed}:news:{n}", self.rng) for n in range(len(NEWS))]
            with engine.begin() as connection:
                shas = list(catalog.put_images(connection, pngs))
            self.images_stored += len(pngs)
        return [
            News(
                key=f"N{number:02d}",
                title=title,
                text=text,
                image=sha,
                valid_from=SEED_DATE,
                valid_to=SEED_DATE + dt.timedelta(days=90),
            )
            for number, ((title, text), sha) in enumerate(zip(NEWS, shas, strict=True), 1)
        ]

    def tables(self) -> list[Record]:
        tables: list[Record] = [
            Table(key=f"M{n:02d}", name=f"Mesa {n}", area="Salón" if n <= 14 else "Terraza",
                  seats=(2, 4, 4, 6)[n % 4])
            for n in range(1, 21)
        ]  # fmt: skip
        tables += [
            Table(key=f"H{n}", name=f"Habitación {n}", kind="room", area=f"Piso {n // 100}",
                  seats=(1, 2, 2, 3)[n % 4])
            for n in (101, 102, 103, 104, 201, 202, 203, 204)
        ]  # fmt: skip
        return tables


# -- helpers -------------------------------------------------------------------------------


def scrypt_hash(password: str, salt: bytes, *, n: int = 16384, r: int = 8, p: int = 1) -> str:
    """`$scrypt$n=16384,r=8,p=1$<salt>$<hash>` (unpadded base64), as POS users' hashes are."""
    digest = hashlib.scrypt(password.encode(), salt=salt, n=n, r=r, p=p, dklen=32)
    return f"$scrypt$n={n},r={r},p={p}${_b64(salt)}${_b64(digest)}"


def ean13(first12: str) -> str:
    """An EAN-13 barcode: 12 digits and their check digit."""
    total = sum(int(d) * (3 if i % 2 else 1) for i, d in enumerate(first12))
    return first12 + str((10 - total % 10) % 10)


def fake_png(name: str, rng: random.Random) -> bytes:
    """Deterministic fake image bytes (2-20 KB) that start like a PNG, distinct per name."""
    size = rng.randrange(2048, 20480)
    return PNG_SIGNATURE + hashlib.shake_256(name.encode()).digest(size - len(PNG_SIGNATURE))


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode().rstrip("=")


def _slug(text: str) -> str:
    plain = text.lower().translate(str.maketrans("áéíóúüñ", "aeiouun"))
    return "-".join("".join(c if c.isalnum() else " " for c in plain).split())
