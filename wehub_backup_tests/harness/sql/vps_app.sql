-- A self-hosted application database, as its local owner role built it (uuid-ossp lives in public).
CREATE TYPE public.order_state AS ENUM ('new', 'paid', 'shipped', 'returned');
CREATE DOMAIN public.money_amount AS numeric(12, 2) CHECK (VALUE >= 0);
CREATE SCHEMA inventory;

CREATE FUNCTION public.touch_updated_at() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  NEW.updated_at := now();
  RETURN NEW;
END $$;

CREATE TABLE public.customers (
  id uuid PRIMARY KEY DEFAULT public.uuid_generate_v4(),
  email text NOT NULL UNIQUE,
  full_name text,
  notes text,
  tags text[],
  created_at timestamptz NOT NULL DEFAULT now(),
  updated_at timestamptz NOT NULL DEFAULT now()
);
CREATE TRIGGER customers_touch BEFORE UPDATE ON public.customers
  FOR EACH ROW EXECUTE FUNCTION public.touch_updated_at();
COMMENT ON TABLE public.customers IS 'Customers of the shop';

CREATE TABLE public.orders (
  id bigserial PRIMARY KEY,
  customer_id uuid NOT NULL REFERENCES public.customers (id),
  state public.order_state NOT NULL DEFAULT 'new',
  total public.money_amount NOT NULL,
  placed_on date NOT NULL,
  ships_within interval,
  attributes jsonb,
  quantities integer[],
  receipt bytea,
  token text DEFAULT encode(public.gen_random_bytes(8), 'hex')
);
CREATE TABLE inventory."Stock Items" (
  "SKU" text PRIMARY KEY,
  "Unit Price" numeric(12, 2),
  "Weight kg" real,
  updated_at timestamptz
);
CREATE TABLE public.import_log (line text, imported_at timestamptz);
CREATE SEQUENCE public.invoice_number_seq START 5000;
CREATE VIEW public.customer_totals AS
  SELECT c.id, c.email, coalesce(sum(o.total), 0) AS total
  FROM public.customers AS c LEFT JOIN public.orders AS o ON o.customer_id = c.id
  GROUP BY c.id, c.email;

INSERT INTO public.customers (id, email, full_name, notes, tags, created_at, updated_at)
SELECT md5('vps-customer' || i)::uuid, 'shopper' || i || '@example.test',
       CASE i % 3 WHEN 0 THEN 'Jürgen ' || i WHEN 1 THEN 'Ōsaka 😀 ' || i ELSE NULL END,
       CASE WHEN i % 4 = 0 THEN E'multi\nline\twith \\N and \\ backslash' END,
       ARRAY['vip', NULL, 'with "quote"'],
       timestamptz '2023-06-01 00:00+00' + i * interval '1 day',
       timestamptz '2023-07-01 00:00+00' + i * interval '1 day'
FROM generate_series(1, 300) AS i;
INSERT INTO public.orders (customer_id, state, total, placed_on, ships_within, attributes, quantities, receipt, token)
SELECT md5('vps-customer' || (1 + i % 300))::uuid, (enum_range(NULL::public.order_state))[1 + i % 4],
       round((i * 3.33)::numeric, 2), date '2023-06-01' + i % 500, interval '1 day' * (i % 10),
       jsonb_build_object('gift', i % 2 = 0, 'note', 'n' || i), ARRAY[i % 5, i % 7],
       decode('00' || md5('receipt' || i), 'hex'), md5('token' || i)
FROM generate_series(1, 5000) AS i;
INSERT INTO inventory."Stock Items" ("SKU", "Unit Price", "Weight kg", updated_at)
SELECT 'SKU-' || lpad(i::text, 5, '0'), round((i * 1.25)::numeric, 2),
       CASE WHEN i % 9 = 0 THEN 'NaN'::real ELSE i / 10.0 END, timestamptz '2024-01-01 00:00+00' + i * interval '1 minute'
FROM generate_series(1, 200) AS i;
INSERT INTO public.import_log (line, imported_at)
SELECT E'row\t' || i % 10, timestamptz '2024-01-01 00:00+00' FROM generate_series(1, 100) AS i;
SELECT setval('public.invoice_number_seq', 5123);
