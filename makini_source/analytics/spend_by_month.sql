-- Spend by order month and currency: net value of live, non-cancelled, non-draft POs.
SELECT po.connection_id,
       DATE_TRUNC('month', po.order_date) AS order_month,
       po.currency_key,
       COUNT(*) AS orders,
       SUM(po.total_net_value) AS net_spend
FROM {purchase_orders} po
WHERE po.deleted_at IS NULL
  AND po.order_date IS NOT NULL
  AND COALESCE(po.status_key, '') NOT IN ('cancelled', 'draft')
GROUP BY po.connection_id, DATE_TRUNC('month', po.order_date), po.currency_key
