//! The Local API's decision stream: decoded leniently (`stream`), each decision's net
//! screened (`screen`), and folded into the set of bans in force (`book`).
mod book;
mod screen;
mod stream;

pub use self::{
    book::{DecisionBook, Pending},
    screen::{FeedLimits, NetRefusal, Refused, screen_net},
    stream::{DecisionStream, StreamDecision, parse_go_duration},
};
