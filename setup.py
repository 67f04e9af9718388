from setuptools import find_packages, setup

DAGSTER = "1.13.27"
DAGSTER_LIBS = "0.29.27"

setup(
    name="reduction_assets",
    version="0.1.0",
    description="A Dagster asset graph from raw CCD frames to master calibrations, reduced frames, "
    "stacks and archive records",
    python_requires=">=3.11,<3.12",
    packages=find_packages(exclude=["reduction_assets_tests*", "benchmarks*"]),
    package_data={
        "reduction_assets": [
            "support/defaults/*.yaml",
            "catalog/migrations/*.py",
            "catalog/migrations/*.mako",
            "catalog/migrations/versions/*.py",
            "tasks/templates/*.j2",
        ]
    },
    install_requires=[
        # The Dagster family is pinned together: the integration libraries pin one core release.
        f"dagster=={DAGSTER}",
        f"dagster-webserver=={DAGSTER}",
        f"dagster-graphql=={DAGSTER}",
        f"dagster-postgres=={DAGSTER_LIBS}",
        f"dagster-aws=={DAGSTER_LIBS}",
        # Distributed execution chosen in configuration: steps on Celery workers over RabbitMQ, runs
        # as Kubernetes jobs (deploy/helm).
        f"dagster-celery=={DAGSTER_LIBS}",
        f"dagster-k8s=={DAGSTER_LIBS}",
        # Imported directly, not only through Dagster: Config fields (pydantic.Field; Dagster 1.13's
        # config needs pydantic 2), the S3 store's errors (botocore.exceptions; dagster-aws brings boto3
        # and with it botocore; the exceptions caught are old, 1.29 is simply the first release series
        # of Python 3.11's time).
        "pydantic>=2,<3",
        "botocore>=1.29,<2",
        "astropy>=7.0,<9",
        "numpy>=2.0,<3",
        "numba>=0.60,<0.70",
        "sqlalchemy>=2.0,<2.2",
        "alembic>=1.9,<2",  # the catalog's migrations; 1.9: the first release for SQLAlchemy 2.0
        "psycopg2-binary>=2.9,<3",
        "pyyaml>=6.0,<7",
        "tenacity>=9.0,<10",
        "kombu>=5.3,<6",  # AMQP: archive notifications
        "filelock>=3.12,<5",  # the home's lock (FileLock with mode=)
        "tqdm>=4.66,<5",
        "tzdata",  # calendar-versioned (2026.x): no major to stay below
        "astroscrappy>=1.2,<2",  # L.A.Cosmic cosmic-ray detection
        # Source Extractor as a library. The numba aperture kernels (kernels/apertures.py) are bit for
        # bit sep 1.4.1's C: a new minor release of sep is compared with them before the bound moves.
        "sep>=1.4.1,<1.5",
        "matplotlib>=3.8,<4",  # quality plots (Agg backend)
        "requests>=2.31,<3",  # alert webhooks
        "jinja2>=3.1,<4",  # the nightly report's HTML
    ],
    extras_require={
        # reproject: the tests compare the resampler with it; moto's server: a real S3 protocol;
        # the ingester of LCO's archive: the tests compare archive records with its own
        "dev": [
            "pytest>=8",
            "pytest-timeout>=2.3",
            "pytest-xdist>=3.5",  # make test runs the files in two processes
            "ruff==0.17.6",
            "reproject>=0.13",
            "moto[server]>=5.0",
            "ocs-ingester>=3.0",  # the tests compare archive records with LCO's ingester
            "selenium>=4.20",  # drives Debian's chromium (chromium-driver) in the UI tests
            "pillow>=10",  # the UI tests look at their screenshots
            "psutil>=5.9",  # the fault tests find the connections of one process
            "aiosmtpd>=1.4",  # a local SMTP server receives the alert tests' e-mail
        ],
        # The tools the benchmarks compare against.
        "bench": ["ccdproc>=2.4", "reproject>=0.13"],
    },
    entry_points={"console_scripts": ["reduction-assets=reduction_assets.cli.main:main"]},
)
