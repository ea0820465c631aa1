-- When the booking confirmation email went out: a redelivered job sees it
-- and does not send the email twice.
ALTER TABLE bookings ADD COLUMN confirmation_sent_at TIMESTAMPTZ;
