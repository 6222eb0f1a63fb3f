"""
Django settings for djangoapp, the project pgtenant's integration tests run
through the proxy (integration/django_test.go).

It is `django-admin startproject` output for Django 3.2 (Debian 12's
python3-django) with two changes: the database comes from the environment,
and staticfiles is left out because nothing is served.
"""

import os
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent


def _env(name):
    try:
        return os.environ[name]
    except KeyError:
        raise SystemExit(
            f'djangoapp: environment variable {name} is not set '
            '(DJANGO_DB_NAME, DJANGO_DB_HOST, DJANGO_DB_PORT, DJANGO_DB_USER)'
        ) from None


# A throwaway key: this project only ever talks to a throwaway database.
SECRET_KEY = 'django-insecure-pgtenant-integration-test-only'

DEBUG = False

ALLOWED_HOSTS = ['localhost', '127.0.0.1']

INSTALLED_APPS = [
    'django.contrib.admin',
    'django.contrib.auth',
    'django.contrib.contenttypes',
    'django.contrib.sessions',
    'django.contrib.messages',
    'shop',
]

MIDDLEWARE = [
    'django.middleware.security.SecurityMiddleware',
    'django.contrib.sessions.middleware.SessionMiddleware',
    'django.middleware.common.CommonMiddleware',
    'django.middleware.csrf.CsrfViewMiddleware',
    'django.contrib.auth.middleware.AuthenticationMiddleware',
    'django.contrib.messages.middleware.MessageMiddleware',
    'django.middleware.clickjacking.XFrameOptionsMiddleware',
]

ROOT_URLCONF = 'djangoapp.urls'

TEMPLATES = [
    {
        'BACKEND': 'django.template.backends.django.DjangoTemplates',
        'DIRS': [],
        'APP_DIRS': True,
        'OPTIONS': {
            'context_processors': [
                'django.template.context_processors.debug',
                'django.template.context_processors.request',
                'django.contrib.auth.context_processors.auth',
                'django.contrib.messages.context_processors.messages',
            ],
        },
    },
]

WSGI_APPLICATION = 'djangoapp.wsgi.application'

# The database name is the pgtenant tenant: pgtenant runs this project's
# queries in that tenant's schema. No password: the test cluster trusts
# loopback.
#
# DISABLE_SERVER_SIDE_CURSORS is what Django's documentation asks for behind
# a transaction-pooling proxy: a server-side cursor (.iterator()) outside a
# transaction is DECLAREd WITH HOLD, which pgtenant can only serve by
# keeping the client on one backend until it disconnects (README "Django").
# CONN_MAX_AGE 0 closes the connection at the end of every request, Django's
# default; each manage.py run here is short. A web process would keep its
# connections (README "Django" recommends 60): to pgtenant an idle one holds
# no backend.
DATABASES = {
    'default': {
        'ENGINE': 'django.db.backends.postgresql',
        'NAME': _env('DJANGO_DB_NAME'),
        'HOST': _env('DJANGO_DB_HOST'),
        'PORT': _env('DJANGO_DB_PORT'),
        'USER': _env('DJANGO_DB_USER'),
        'PASSWORD': '',
        'CONN_MAX_AGE': 0,
        # DJANGO_DB_SERVER_SIDE_CURSORS=1 turns them back on, for the test
        # that shows what they cost (integration/django14_test.go).
        'DISABLE_SERVER_SIDE_CURSORS': os.environ.get('DJANGO_DB_SERVER_SIDE_CURSORS') != '1',
        'OPTIONS': {
            'sslmode': 'disable',
            'connect_timeout': 10,
            'application_name': 'pgtenant-djangoapp',
        },
    }
}

# README "Django", several tenants: DJANGO_DB_TENANTS=acme,globex adds an
# alias per tenant and the router that picks the current one.
TENANTS = [t for t in os.environ.get('DJANGO_DB_TENANTS', '').split(',') if t]
if TENANTS:
    BASE = {**DATABASES['default']}
    DATABASES.update({t: {**BASE, 'NAME': t} for t in TENANTS})
    DATABASE_ROUTERS = ['djangoapp.tenancy.TenantRouter']
    MIDDLEWARE.insert(0, 'djangoapp.tenancy.middleware')
    ALLOWED_HOSTS += [f'{t}.example.com' for t in TENANTS]

AUTH_PASSWORD_VALIDATORS = [
    {
        'NAME': 'django.contrib.auth.password_validation.UserAttributeSimilarityValidator',
    },
    {
        'NAME': 'django.contrib.auth.password_validation.MinimumLengthValidator',
    },
    {
        'NAME': 'django.contrib.auth.password_validation.CommonPasswordValidator',
    },
    {
        'NAME': 'django.contrib.auth.password_validation.NumericPasswordValidator',
    },
]

LANGUAGE_CODE = 'en-us'

TIME_ZONE = 'UTC'

USE_I18N = True

USE_L10N = True

USE_TZ = True

STATIC_URL = '/static/'

DEFAULT_AUTO_FIELD = 'django.db.models.BigAutoField'
