-- Spend by order month and currency: net value of live, non-cancelled, non-draft POs.
-- The month is that of the order date as Makini gives it (a calendar date), the same in any
-- session time zone: a date-only field stored as a UTC timestamp is read in UTC (see
-- analytics/__init__.py).
SELECT po.connection_id,
       CAST(DATE_TRUNC('month', CAST(po.order_date AS DATE)) AS DATE) AS order_month,
       po.currency_key,
       COUNT(*) AS orders,
       SUM(po.total_net_value) AS net_spend
FROM purchase_orders po
WHERE po.deleted_at IS NULL
  AND po.order_date IS NOT NULL
  AND COALESCE(po.status_key, '') NOT IN ('cancelled', 'draft')
GROUP BY po.connection_id, CAST(DATE_TRUNC('month', CAST(po.order_date AS DATE)) AS DATE),
         po.currency_key
