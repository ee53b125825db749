DROP TABLE membership_history;
DROP TABLE memberships;
DROP TABLE users;
DROP TABLE segments;
