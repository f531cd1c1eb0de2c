// The native epoll engine; see CIOEngine.
